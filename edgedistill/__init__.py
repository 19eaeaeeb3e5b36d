"""edgedistill: a large pretrained model to a quantized on-device bundle, one YAML and one command."""
