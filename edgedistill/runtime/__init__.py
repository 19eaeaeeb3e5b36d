"""What runs models with ONNX Runtime: helpers, bench.py, statistics, emulated and SSH targets, devices."""
