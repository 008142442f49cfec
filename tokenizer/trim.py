"""Trim an existing model's vocabulary to what a corpus uses (plus special and byte tokens).

The embedding and output layers keep only those rows, and the tokenizer is rewritten with new ids. Text
made of kept tokens encodes to the same tokens (mapped to the new ids) and the model gives the same logits
for them; other text still encodes, through byte tokens.

BPE: a merge is kept when its result is kept, and the pieces that kept merges combine are kept too, so the
merges that fire on the corpus stay in the same order. Unigram: the best segmentation of corpus text uses only
kept pieces, so it stays the best.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from nexus_k.core.errors import UserError
from tokenizer.sources import SourceOptions, read_corpus
from tokenizer.surgery import (
    count_parameters,
    folder_size,
    load_model_and_tokenizer,
    remap_special_ids,
    select_embedding_rows,
    time_forward,
    write_record,
)

logger = logging.getLogger(__name__)

TRIM_RECORD = "nexus_k_trim.json"
RESERVED_TOKEN = re.compile(r"^(<unused\d+>|\[unused\d+\]|<\|reserved_special_token_\d+\|>)$")
BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


@dataclass
class TrimConfig:
    """A vocabulary trim (saved beside the trimmed model as ``nexus_k_trim.json``)."""

    model: str
    """Model folder, hub name or ``.gguf`` file."""
    corpus: list[str]
    """Text whose tokens are kept (any corpus format of ``nexus-k tokenizer train``)."""
    out: str
    """Folder for the trimmed model and tokenizer."""
    text_field: str = "text"
    """JSONL field or TSV/CSV column with the text."""
    max_chars: int | None = None
    """Read at most this many corpus characters."""
    keep_reserved: bool = False
    """Keep reserved placeholder tokens (``<unused12>`` ...); other added and special tokens are always kept."""
    dtype: str = "auto"
    """Weights dtype to load and save (``auto``, ``float32``, ``bfloat16`` ...)."""
    check_texts: int = 4
    """Corpus texts on which logits and forward time of the original and trimmed model are compared."""
    token_ids: str | None = None
    """A JSON file whose ``used_token_ids`` are kept as if the corpus had used them (a recorded recipe's
    result, e.g. ``serving/demo_vocab``); the corpus may then be empty."""


@dataclass
class TrimReport:
    """Sizes before and after, and the logit check."""

    vocab_before: int
    vocab_after: int
    parameters_before: int
    parameters_after: int
    parameter_cut: float
    weights_bytes_after: int
    corpus_texts: int
    used_tokens: int
    kept_ids_sha256: str = ""
    max_logit_diff: float | None = None
    argmax_agreement: float | None = None
    forward_seconds_before: float | None = None
    forward_seconds_after: float | None = None


def _parse_merge(merge) -> tuple[str, str]:
    if isinstance(merge, str):
        left, right = merge.split(" ")
        return left, right
    return merge[0], merge[1]


def _bpe_closure(model: dict, kept_tokens: set[str]) -> None:
    """Add to ``kept_tokens`` every piece that a merge producing a kept token combines."""
    prefix = model.get("continuing_subword_prefix") or ""
    by_result: dict[str, list[tuple[str, str]]] = {}
    for merge in model["merges"]:
        left, right = _parse_merge(merge)
        joined = left + (right[len(prefix) :] if prefix and right.startswith(prefix) else right)
        by_result.setdefault(joined, []).append((left, right))
    stack = list(kept_tokens)
    while stack:
        for pair in by_result.get(stack.pop(), ()):
            for piece in pair:
                if piece not in kept_tokens:
                    kept_tokens.add(piece)
                    stack.append(piece)


def _remap_post_processor(node, mapping: dict[int, int]) -> None:
    if isinstance(node, list):
        for item in node:
            _remap_post_processor(item, mapping)
    elif isinstance(node, dict):
        for token in (node.get("special_tokens") or {}).values():
            token["ids"] = [mapping[i] for i in token.get("ids", []) if i in mapping]
        for key in ("sep", "cls"):
            if isinstance(node.get(key), list) and node[key][1] in mapping:
                node[key][1] = mapping[node[key][1]]
        for value in node.values():
            if isinstance(value, list | dict):
                _remap_post_processor(value, mapping)


def keep_ids(data: dict, used: set[int], rows: int, keep_reserved: bool, extra: set[int]) -> list[int]:
    """Sorted ids to keep: ``used`` and ``extra`` ids, added tokens, byte tokens, BPE closure; all < ``rows``."""
    model = data["model"]
    kinds = model["type"]
    if kinds == "BPE":
        vocab: dict[str, int] = model["vocab"]
    elif kinds == "Unigram":
        vocab = {piece: i for i, (piece, _score) in enumerate(model["vocab"])}
    else:
        raise UserError(f"can only trim BPE and Unigram tokenizers, not {kinds}")
    id_to_token = {i: t for t, i in vocab.items()}
    kept = set(used) | extra
    kept |= {t["id"] for t in data.get("added_tokens", []) if keep_reserved or not RESERVED_TOKEN.match(t["content"])}
    kept |= {i for t, i in vocab.items() if BYTE_TOKEN.match(t)}
    if "ByteLevel" in json.dumps(data.get("decoder")):
        from tokenizers.pre_tokenizers import ByteLevel

        kept |= {vocab[c] for c in ByteLevel.alphabet() if c in vocab}
    if kinds == "BPE":
        tokens = {id_to_token[i] for i in kept if i in id_to_token}
        _bpe_closure(model, tokens)
        kept |= {vocab[t] for t in tokens}
    return sorted(i for i in kept if 0 <= i < rows)


def trim_tokenizer_json(data: dict, kept_ids: list[int]) -> dict:
    """A copy of a ``tokenizer.json`` dict with only ``kept_ids``, renumbered 0..n-1 in order."""
    data = json.loads(json.dumps(data))
    mapping = {old: new for new, old in enumerate(kept_ids)}
    model = data["model"]
    if model["type"] == "BPE":
        model["vocab"] = {t: mapping[i] for t, i in model["vocab"].items() if i in mapping}
        kept_tokens = set(model["vocab"])
        merges = []
        prefix = model.get("continuing_subword_prefix") or ""
        for merge in model["merges"]:
            left, right = _parse_merge(merge)
            joined = left + (right[len(prefix) :] if prefix and right.startswith(prefix) else right)
            if left in kept_tokens and right in kept_tokens and joined in kept_tokens:
                merges.append(merge)
        model["merges"] = merges
    else:
        model["vocab"] = [model["vocab"][i] for i in kept_ids]
        if model.get("unk_id") is not None:
            model["unk_id"] = mapping.get(model["unk_id"])
    data["added_tokens"] = [dict(t, id=mapping[t["id"]]) for t in data.get("added_tokens", []) if t["id"] in mapping]
    _remap_post_processor(data.get("post_processor"), mapping)
    return data


def used_token_ids(tokenizer, texts: list[str], batch: int = 512) -> set[int]:
    """Every token id that encoding ``texts`` produces."""
    used: set[int] = set()
    for start in range(0, len(texts), batch):
        for ids in tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]:
            used.update(ids)
    return used


def _config_special_ids(model) -> set[int]:
    ids: set[int] = set()
    for config in (model.config, getattr(model, "generation_config", None)):
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(config, name, None) if config is not None else None
            ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    return ids


def _save_trimmed_tokenizer(tokenizer, out: Path, kept_ids: list[int]) -> None:
    tokenizer.save_pretrained(out)
    path = out / "tokenizer.json"
    data = trim_tokenizer_json(json.loads(path.read_text(encoding="utf-8")), kept_ids)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in config:
        mapping = {old: new for new, old in enumerate(kept_ids)}
        config["added_tokens_decoder"] = {
            str(mapping[int(k)]): v for k, v in config["added_tokens_decoder"].items() if int(k) in mapping
        }
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def vocab_sha256(data: dict) -> str:
    """SHA256 of a ``tokenizer.json``'s pieces in id order: which vocabulary a list of token ids refers to."""
    model = data["model"]
    if model["type"] == "BPE":
        pieces = [t for t, _i in sorted(model["vocab"].items(), key=lambda item: item[1])]
    else:
        pieces = [piece for piece, _score in model["vocab"]]
    return hashlib.sha256("\n".join(pieces).encode("utf-8")).hexdigest()


def ids_sha256(ids: list[int]) -> str:
    """SHA256 of a sorted id list (a short name for a kept vocabulary)."""
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def read_token_ids(path: str | Path, data: dict) -> set[int]:
    """The ``used_token_ids`` of a token-id file, refused when it names another vocabulary than ``data``'s."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"cannot read token-id file {path}: {err.strerror}") from None
    except ValueError:
        raise UserError(f"token-id file {path} is not JSON") from None
    ids = record.get("used_token_ids") if isinstance(record, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise UserError(f"token-id file {path} has no used_token_ids list of integers")
    expected = record.get("vocab_sha256")
    if expected and expected != vocab_sha256(data):
        raise UserError(f"token-id file {path} was made for another vocabulary (vocab_sha256 differs)")
    return set(ids)


def chat_template_ids(tokenizer) -> set[int]:
    """Token ids that the tokenizer's chat template writes around messages (turn markers, role names)."""
    if not getattr(tokenizer, "chat_template", None):
        return set()
    messages = [{"role": "system", "content": "x"}, {"role": "user", "content": "x"},
                {"role": "assistant", "content": "x"}, {"role": "user", "content": "x"}]
    ids: set[int] = set()
    for conversation in (messages, messages[1:]):
        try:
            rendered = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        except Exception:  # a template may refuse a system role: the other rendering covers it
            continue
        ids.update(tokenizer.encode(rendered, add_special_tokens=False))
    return ids


def _check_inputs(tokenizer, texts: list[str], count: int, max_tokens: int = 64):
    import torch

    rows = [tokenizer.encode(t, add_special_tokens=False)[:max_tokens] for t in texts[:count]]
    length = min((len(r) for r in rows if r), default=0)
    if length == 0:
        return None
    return torch.tensor([r[:length] for r in rows if len(r) >= length])


def trim_model(config: TrimConfig) -> TrimReport:
    """Trim ``config.model`` to the vocabulary of ``config.corpus``; save model, tokenizer and record."""
    import torch
    from transformers import AutoTokenizer

    if not config.corpus and not config.token_ids:
        raise UserError("nothing to keep: give a corpus or a token-id file")
    texts = (read_corpus(config.corpus, SourceOptions(text_field=config.text_field), config.max_chars)
             if config.corpus else [])
    model, tokenizer = load_model_and_tokenizer(config.model, config.dtype)
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{config.model} has no tokenizer.json (a fast tokenizer); only those can be trimmed")
    rows = model.get_input_embeddings().weight.shape[0]
    parameters_before = count_parameters(model)
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    used = used_token_ids(tokenizer, texts)
    if config.token_ids:
        used |= read_token_ids(config.token_ids, data)
    extra = set(tokenizer.all_special_ids) | _config_special_ids(model) | chat_template_ids(tokenizer)
    kept = keep_ids(data, used, rows, config.keep_reserved, extra)
    mapping = {old: new for new, old in enumerate(kept)}
    logger.info("keeping %d of %d tokens (%d used by the corpus)", len(kept), len(tokenizer), len(used))

    inputs = _check_inputs(tokenizer, texts, config.check_texts)
    reference = before_seconds = None
    if inputs is not None:
        with torch.inference_mode():
            reference = model(input_ids=inputs).logits[..., kept].float()
        before_seconds = time_forward(model, inputs)

    select_embedding_rows(model, kept)
    remap_special_ids(model, mapping)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    _save_trimmed_tokenizer(tokenizer, out, kept)
    model.save_pretrained(out)

    trimmed_tokenizer = AutoTokenizer.from_pretrained(str(out))
    for text in texts[: max(config.check_texts, 64)]:
        old_ids = [mapping[i] for i in tokenizer.encode(text, add_special_tokens=False)]
        if trimmed_tokenizer.encode(text, add_special_tokens=False) != old_ids:
            raise UserError(f"trimmed tokenizer encodes differently: {text[:60]!r}")
    report = TrimReport(
        vocab_before=len(tokenizer),
        vocab_after=len(kept),
        parameters_before=parameters_before,
        parameters_after=count_parameters(model),
        parameter_cut=round(1 - count_parameters(model) / parameters_before, 4),
        weights_bytes_after=folder_size(out),
        corpus_texts=len(texts),
        used_tokens=len(used),
        kept_ids_sha256=ids_sha256(kept),
    )
    if inputs is not None and reference is not None:
        new_inputs = torch.tensor([[mapping[i] for i in row] for row in inputs.tolist()])
        with torch.inference_mode():
            logits = model(input_ids=new_inputs).logits.float()
        report.max_logit_diff = float((logits - reference).abs().max())
        report.argmax_agreement = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
        report.forward_seconds_before = round(before_seconds, 4)
        report.forward_seconds_after = round(time_forward(model, new_inputs), 4)
    write_record(out, TRIM_RECORD, {"config": asdict(config), "report": asdict(report), "kept_ids": kept})
    return report
