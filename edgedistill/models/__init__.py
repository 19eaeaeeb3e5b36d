"""Models: architectures, presets and their weights, structure checks, trained-model files, feature taps.

Families: torchvision, timm, EfficientNet-Lite, Hugging Face transformers, your Python, and our own.

The package is the public surface (``models.build``, ``models.load_trained``, ...), as torchvision.models is;
each name lives in one module below."""
from edgedistill.models.architectures import (
                                              ARCHS,
                                              FAMILIES,
                                              TextCNN,
                                              build,
                                              is_head,
                                              last_head,
                                              load_weights,
                                              small_cnn,
                                              swap_head,
                                              text_cnn,
                                              weights_file,
)
from edgedistill.models.checks import CHECK_SIZES, check_runs, run_problem, structure
from edgedistill.models.presets import ModelPreset, WeightsSpec, load_preset
from edgedistill.models.saved import input_size, load_trained, num_params, save_trained, trained_info
from edgedistill.models.taps import Taps, find_module, head_path
from edgedistill.models.transformers import (
                                              TRANSFORMER_LAYOUTS,
                                              TRANSFORMER_REFUSED,
                                              HFClassifier,
                                              hf_ref,
                                              resolve_hf_ref,
                                              transformer_layout,
)

__all__ = ["ARCHS", "CHECK_SIZES", "FAMILIES", "TRANSFORMER_LAYOUTS", "TRANSFORMER_REFUSED", "HFClassifier",
           "ModelPreset", "Taps", "TextCNN", "WeightsSpec", "build", "check_runs", "find_module", "head_path",
           "hf_ref", "input_size", "is_head", "last_head", "load_preset", "load_trained", "load_weights",
           "num_params", "resolve_hf_ref", "run_problem", "save_trained", "small_cnn", "structure", "swap_head",
           "text_cnn", "trained_info", "transformer_layout", "weights_file"]
