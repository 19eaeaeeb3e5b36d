"""preprocess.json for images: what a device does to a decoded image (resize rule, scale, mean,
std, layout), checked when read, and the same arithmetic here (to_model_input)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgedistill.core.errors import DataError
from edgedistill.data.config import DataConfig
from edgedistill.data.image.files import DECODE_RULES, resize_uint8, shorter_side

# ---- the model's input -------------------------------------------------------------------------


def preprocess_spec(cfg: DataConfig, source_channels: int, from_files: bool = True) -> dict:
    """preprocess.json: enough to feed the model without edgedistill (from_files: the images were
    decoded from files, by DECODE_RULES, which it then states)."""
    spec = {
        "input_name": "input",
        "layout": "NCHW",
        "dtype": "float32",
        "height": cfg.image_size,
        "width": cfg.image_size,
        "channels": cfg.channels,
        "color": "grayscale" if source_channels == 1 else "rgb",
        "grayscale_to_channels": "repeat" if (source_channels == 1 and cfg.channels == 3) else None,
        "resize": resize_spec(cfg),
        "scale": 1.0 / 255.0,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "formula": "x = (pixel * scale - mean[c]) / std[c]",
    }
    if from_files:
        spec["decode"] = dict(DECODE_RULES)
    return spec


def resize_spec(cfg: DataConfig) -> dict:
    """How an image becomes height x width, precisely enough to do it on a device."""
    size = [cfg.image_size, cfg.image_size]
    shorter = shorter_side(cfg)
    if shorter is None:
        return {"rule": "stretch", "size": size, "interpolation": "bilinear", "antialias": True,
                "text": f"resize the whole image to {cfg.image_size}x{cfg.image_size} (aspect ratio not kept), no crop"}
    return {"rule": "shorter_side_center_crop", "shorter_side": shorter, "size": size, "interpolation": "bilinear",
            "antialias": True,
            "text": f"resize so the shorter side is {shorter} px (longer side: int({shorter} * long / short)), then "
                    f"crop the central {cfg.image_size}x{cfg.image_size} (top = round((h - {cfg.image_size}) / 2), "
                    f"left likewise): torchvision Resize({shorter}) + CenterCrop({cfg.image_size})"}


def check_image_spec(spec: dict, path: Path) -> dict:
    """An image preprocess.json, checked to hold what to_model_input reads."""
    ok = (all(isinstance(spec.get(k), int) and spec[k] > 0 for k in ("height", "width"))
          and spec.get("channels") in (1, 3) and spec.get("color") in ("grayscale", "rgb")
          and isinstance(spec.get("scale"), (int, float))
          and all(isinstance(spec.get(k), list) and len(spec[k]) == spec["channels"]
                  and all(isinstance(v, (int, float)) for v in spec[k]) for k in ("mean", "std"))
          and all(v > 0 for v in spec["std"]) and _resize_ok(spec))
    if not ok:
        raise DataError(f"'{path}' is not a preprocess.json as bundles hold it (height, width, channels, color, "
                        f"scale, mean, std)")
    return spec


def view_spec(spec: dict, size: int | None) -> dict:
    """preprocess.json for a model that takes size x size pixels, from the spec of images stored at
    a larger size: the same rule to the stored size, then the whole square resized to size x size
    (bilinear, antialiased), as every batch is. size None or the stored size: spec itself."""
    if size is None or (size == spec["height"] and size == spec["width"]):
        return spec
    stored = spec["resize"]["size"]
    if size > stored[0]:
        raise AssertionError(f"a {size}-px view of images stored at {stored[0]} px")  # stored_size() is the largest
    resize = dict(spec["resize"], then_resize=[size, size],
                  text=spec["resize"]["text"] + f"; then resize that {stored[0]}x{stored[1]} square to {size}x{size} "
                                                f"(bilinear, antialiased: torchvision Resize([{size}, {size}]))")
    return dict(spec, height=size, width=size, resize=resize)


def _resize_ok(spec: dict) -> bool:
    """The resize entry, where present: the stored square's size, and a final size equal to the model's."""
    resize = spec.get("resize")
    if resize is None:
        return True
    square = lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(i, int) and i > 0 for i in v)
    return (isinstance(resize, dict) and square(resize.get("size"))
            and ("then_resize" not in resize or resize["then_resize"] == [spec["height"], spec["width"]]))


def to_model_input(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, channels, height, width) following preprocess.json: images
    at the stored size of a smaller model's view (resize.then_resize) are resized first."""
    if images.shape[1:3] != (spec["height"], spec["width"]):
        if list(images.shape[1:3]) != spec.get("resize", {}).get("size") or "then_resize" not in spec["resize"]:
            raise DataError(f"images of {images.shape[1]}x{images.shape[2]} px do not fit this preprocess.json "
                            f"({spec['height']}x{spec['width']} px)")
        images = resize_uint8(images, spec["height"])
    x = images.astype(np.float32) * np.float32(spec["scale"])
    if x.shape[-1] == 1 and spec["channels"] == 3:
        x = np.repeat(x, 3, axis=-1)
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
