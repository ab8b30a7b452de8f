"""Models: the built-in MLP, KST and CNN, their custom layers, model files and builder functions."""
