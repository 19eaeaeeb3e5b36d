"""Text: sentences or documents, tokenized once by the teacher's Hugging Face tokenizer into int64
token ids ([CLS] ... [SEP], right-padded to data.max_length), stored memory-mapped like images.

A torch model here takes the token ids alone, (N, L) int64: its attention mask is ids != pad id,
which is what the tokenizer's own mask is for right-padded input. The ONNX model takes what a device
sends, by name: input_ids, attention_mask (and token_type_ids for BERT-family graphs), int64.
Training and evaluation cut each batch to its longest example (dynamic padding, as Hugging Face's
DataCollatorWithPadding does); padding changes no logit, only the time.

Its parts: files (text files and CSVs to examples; data kinds rotten_tomatoes, bbc_news, textfolder,
csv), tokenizer (tokenization and preprocess.json); this module is the face the stages call
(data.modality's interface). Transformers models are exported by models.transformers (optimum, then
ONNX Runtime's transformer optimizer, the fusions checked); other students (edgedistill:text_cnn)
through torch.onnx with dynamic batch and sequence axes.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedistill.core.errors import DataError
from edgedistill.data.modality import MODALITIES
from edgedistill.data.splits import SOURCES, SPLITS, MapsByName, NpyWriter
from edgedistill.data.text.files import list_text_files, read_text_file
from edgedistill.data.text.tokenizer import (
    TOKENIZER_FILES,
    covered_text,
    load_tokenizer,
    preprocess_spec,
    text_feeds,
    tokenize,
    tokenizer_source,
    trimmed,
)


@dataclass
class TextSplit:
    """One split of token ids as models see it (the same interface as image.Split)."""

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


class TextModality:
    name = "text"
    kinds = ("rotten_tomatoes", "bbc_news", "textfolder", "csv")
    recipes = "transformer"
    sized = False

    def data_config(self, data, *, stored_size, teacher_preset):
        return data.model_copy(update={"tokenizer": tokenizer_source(data.tokenizer, teacher_preset)})

    def sources(self, cfg) -> dict[str, Path]:
        out = SOURCES[cfg.kind](cfg)
        if cfg.unlabeled_dir is not None:
            out["unlabeled"] = Path(cfg.unlabeled_dir)
        from edgedistill.models.transformers import resolve_hf_ref

        folder = Path(resolve_hf_ref(cfg.tokenizer))
        if folder.is_dir():  # a hub id's files are the hub's: its id is in the key
            out["tokenizer"] = folder
        return out

    def list_unlabeled(self, root: Path, notes: list[str]) -> np.ndarray:
        if not root.is_dir():
            raise DataError(f"data.unlabeled_dir '{root}' is not a folder")
        files = list_text_files(root, notes)
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
        from edgedistill.models.transformers import HFClassifier, export_transformer
        from edgedistill.runtime.onnx_utils import export_onnx

        if isinstance(model, HFClassifier):
            return export_transformer(model.hf, path, opset, log)
        export_onnx(model, example, path, opset, input_name="input_ids", dynamic=("batch", "sequence"))
        return {"exporter": "torch.onnx"}

    def bundle_files(self, dataset: Path, test: Any, onnx_path: Path, out: Path) -> dict:
        """The tokenizer (tokenizer.json, vocab.txt and their configs) and golden.json: a few real test
        sentences with their token ids, attention masks and the shipped model's logits, so an app
        can check its own tokenizer and runtime end to end."""
        from edgedistill.runtime.onnx_utils import ort_predict

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


GOLDEN = 8
"""Sentences in a text bundle's golden.json."""

MODALITIES.register("text")(TextModality())
