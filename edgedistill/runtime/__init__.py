"""What runs models with ONNX Runtime: sessions and export helpers, the standalone benchmark, statistics,
emulated and SSH targets, the devices file."""
