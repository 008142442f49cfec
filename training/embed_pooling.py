"""Pooling of token vectors into one embedding, and the sentence-transformers files that declare it.

Format facts (what sentence-transformers, vLLM's pooling runner and our own loader read):

- ``modules.json``: the module list; ``sentence_transformers.models.Transformer`` at path ``""`` (the model
  folder itself), ``sentence_transformers.models.Pooling`` at ``1_Pooling`` and, when embeddings are unit
  length, ``sentence_transformers.models.Normalize`` at ``2_Normalize``.
- ``1_Pooling/config.json``: ``word_embedding_dimension`` and one true flag among ``pooling_mode_cls_token``,
  ``pooling_mode_mean_tokens``, ``pooling_mode_lasttoken`` (plus the other modes, false).
- ``sentence_bert_config.json``: ``max_seq_length``.
- ``nexus_k_embed.json`` (ours): pooling, normalize, max_length, matryoshka_dimensions, base, lora.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_MODE_FLAGS = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "last": "pooling_mode_lasttoken"}
_ALL_FLAGS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
POOLING_DIR = "1_Pooling"
NORMALIZE_DIR = "2_Normalize"
NEXUS_FILE = "nexus_k_embed.json"


@dataclass
class PoolingSpec:
    """How a model folder turns token vectors into its embedding."""

    pooling: str = "mean"
    """``mean``, ``last`` or ``cls``."""
    normalize: bool = True
    """Embeddings scaled to unit length."""
    dimension: int = 0
    """Width of the embedding (the model's hidden size)."""
    max_length: int = 512
    """Tokens per input the model was trained with."""
    matryoshka_dimensions: list[int] = field(default_factory=list)
    """Prefix lengths that were trained to work alone (empty: only the full size)."""


def pool(hidden: Any, attention_mask: Any, mode: str) -> Any:
    """One vector per row of ``hidden`` (batch, tokens, width) under ``attention_mask`` (batch, tokens).

    Works for right- and left-padded batches: ``last`` takes the last unmasked position, ``cls`` the first.
    """
    import torch

    mask = attention_mask.to(hidden.dtype)
    if mode == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
    positions = torch.arange(mask.shape[1], device=hidden.device).expand_as(attention_mask)
    if mode == "last":
        index = (positions * attention_mask).argmax(1)
    elif mode == "cls":
        index = attention_mask.long().argmax(1)
    else:
        raise ValueError(f"unknown pooling {mode!r}")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def write_pooling_files(out: str | Path, spec: PoolingSpec, extra: dict[str, Any] | None = None) -> None:
    """Write ``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json`` and ours."""
    out = Path(out)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
    ]
    if spec.normalize:
        modules.append({"idx": 2, "name": "2", "path": NORMALIZE_DIR, "type": "sentence_transformers.models.Normalize"})
        (out / NORMALIZE_DIR).mkdir(parents=True, exist_ok=True)
        # Git keeps no empty folders; sentence-transformers only needs the folder to exist.
        (out / NORMALIZE_DIR / ".keep").write_text("", encoding="utf-8")
    pooling = {flag: False for flag in _ALL_FLAGS}
    pooling[_MODE_FLAGS[spec.pooling]] = True
    pooling = {"word_embedding_dimension": spec.dimension, **pooling, "include_prompt": True}
    (out / POOLING_DIR).mkdir(parents=True, exist_ok=True)
    _write_json(out / POOLING_DIR / "config.json", pooling)
    _write_json(out / "modules.json", modules)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": spec.max_length, "do_lower_case": False})
    _write_json(out / "config_sentence_transformers.json", {"prompts": {}, "similarity_fn_name": "cosine"})
    _write_json(out / NEXUS_FILE, {**asdict(spec), **(extra or {})})


def read_pooling_spec(folder: str | Path) -> PoolingSpec | None:
    """The pooling a model folder declares (``modules.json`` + ``1_Pooling``), or None when it has none."""
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    by_type = {m.get("type", "").rsplit(".", 1)[-1]: m for m in modules}
    if "Pooling" not in by_type:
        return None
    config = json.loads((folder / by_type["Pooling"]["path"] / "config.json").read_text(encoding="utf-8"))
    modes = [mode for mode, flag in _MODE_FLAGS.items() if config.get(flag)]
    if len(modes) != 1:
        raise ValueError(f"{folder}: unsupported pooling configuration {config}")
    spec = PoolingSpec(pooling=modes[0], normalize="Normalize" in by_type, dimension=config["word_embedding_dimension"])
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        spec.max_length = json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length") or spec.max_length
    ours = folder / NEXUS_FILE
    if ours.is_file():
        spec.matryoshka_dimensions = json.loads(ours.read_text(encoding="utf-8")).get("matryoshka_dimensions", [])
    return spec


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
