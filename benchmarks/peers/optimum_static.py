"""Runs inside the optimum environment (benchmarks/peers/requirements.txt), not edgedistill's:
Hugging Face Optimum's ORTQuantizer with its avx512_vnni static configuration, MinMax calibration on
the given inputs.

    python optimum_static.py MODEL.onnx CALIB.npy OUT_DIR [--per-channel]
"""
import sys
from pathlib import Path

import numpy as np
from datasets import Dataset
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoCalibrationConfig, AutoQuantizationConfig

model, calib, out_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
per_channel = "--per-channel" in sys.argv
x = np.load(calib)
dataset = Dataset.from_dict({"input": [row for row in x]}).with_format("numpy")
quantizer = ORTQuantizer(model)
qconfig = AutoQuantizationConfig.avx512_vnni(is_static=True, per_channel=per_channel)
# fit() writes an augmented copy of the model; by default into the current folder, so name one beside OUT_DIR
ranges = quantizer.fit(dataset=dataset, calibration_config=AutoCalibrationConfig.minmax(dataset),
                       operators_to_quantize=qconfig.operators_to_quantize, batch_size=32,
                       onnx_augmented_model_name=out_dir.parent / "optimum_augmented.onnx")
quantizer.quantize(save_dir=out_dir, quantization_config=qconfig, calibration_tensors_range=ranges)
print(next(out_dir.glob("*.onnx")))
