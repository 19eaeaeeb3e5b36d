"""Tokenization: the teacher's fast Hugging Face tokenizer found and loaded, texts to right-padded token
ids, the text preprocess.json, and the feeds an ONNX text model takes."""
from __future__ import annotations

import json

import numpy as np

from edgedistill.core.errors import ConfigError

TOKENIZER_FILES = ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]
"""What a text bundle carries of the tokenizer (the files save_pretrained writes for a WordPiece tokenizer)."""


# ---- the tokenizer -----------------------------------------------------------------------------


def tokenizer_source(tokenizer: str | None, teacher_preset: str) -> str:
    """data.tokenizer, or the teacher preset's own, as a reference that does not depend on where things
    are installed (it is part of prepare's cache key): a folder, a hub id, or package:<name>:<folder>."""
    if tokenizer:
        return tokenizer
    from edgedistill.models.presets import load_preset
    from edgedistill.models.transformers import hf_ref

    weights = load_preset(teacher_preset, "teachers").weights
    ref = hf_ref(weights) if weights is not None else None
    if ref is not None:
        return ref
    raise ConfigError(f"teacher preset '{teacher_preset}' has no Hugging Face weights to take a tokenizer from; set "
                      f"data.tokenizer to a tokenizer folder or hub id")


def load_tokenizer(ref: str):
    """A fast (Rust) Hugging Face tokenizer from a folder, a package's folder, or by hub id through the
    Hugging Face cache (downloaded there when online)."""
    from transformers import AutoTokenizer

    from edgedistill.models.transformers import resolve_hf_ref

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
