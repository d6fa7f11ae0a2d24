"""TensorFlow-Serving-compatible model server (issue 3)."""
