"""Quantization: named recipes, ONNX Runtime's quantizer, NNCF's algorithm in ONNX Runtime's layout, and
fake quantization that emulates them in PyTorch."""
