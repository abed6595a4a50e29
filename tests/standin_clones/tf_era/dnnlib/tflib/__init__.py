"""Stand-in for the TensorFlow-era dnnlib.tflib (test helper)."""
