"""Training: one model per (run, seed), deterministic on CPU."""
