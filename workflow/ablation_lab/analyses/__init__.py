"""Per-model analyses, one module each; `registry.ANALYSES` lists them (see docs/extending.md)."""
