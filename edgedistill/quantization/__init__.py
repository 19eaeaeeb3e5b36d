"""Quantization: named recipes, ONNX Runtime's quantizer, NNCF, and fake quantization for QAT."""
