"""edgedistill: a large pretrained model to a quantized on-device bundle, from one YAML file.

The package is layered; a module imports its own layer and the ones below it, never one above
(tests/test_layout.py checks it, and that no imports go in a circle):

    cli           the command line, one module per command group
    pipeline      the pipeline schema: the stages' configs composed; loading, strictness, overrides
    stages        one module per stage, each with its config
    release       report, model card and page, gate, device results
    training      the training loop, its config, the DataLoader, losses
    data          splits on disk; the image and text modalities
    models        architectures, presets and weights, checks, trained-model files
    quantization  recipes, ONNX Runtime's quantizer, NNCF, fake quantization
    runtime       ONNX Runtime helpers, bench.py, statistics, targets, devices
    core          runner, store, config loading, registries, errors
"""
