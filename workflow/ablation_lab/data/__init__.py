"""Datasets: the embedded defaults and the file loaders, and the stratified split every run trains on."""
