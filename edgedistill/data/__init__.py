"""Data: splits on disk shared by every modality, and the image and text modalities behind one interface.

The package is the public surface for scripts (``from edgedistill.data import decode_image``), as
torchvision.datasets is; each name lives in one module below."""
from edgedistill.data.dataset import Dataset, for_kind, for_spec, prepare, read_preprocess
from edgedistill.data.image.files import decode_image
from edgedistill.data.image.spec import preprocess_spec, to_model_input
from edgedistill.data.inputs import open_inputs

__all__ = ["Dataset", "decode_image", "for_kind", "for_spec", "open_inputs", "prepare", "preprocess_spec",
           "read_preprocess", "to_model_input"]
