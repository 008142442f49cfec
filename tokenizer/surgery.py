"""Shared pieces of vocabulary surgery on an existing model: loading, counting, embedding rows, timing."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from nexus_k.core.errors import UserError

logger = logging.getLogger(__name__)


def load_model_and_tokenizer(spec: str | Path, dtype: str = "auto"):
    """A causal LM and its tokenizer from a folder, hub name or ``.gguf`` file (dequantised on load)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tokenizer.stats import load_tokenizer

    path = Path(spec)
    if not path.exists() and (path.is_absolute() or str(spec).startswith(".") or path.suffix == ".gguf"):
        raise UserError(f"model not found: {spec}")
    kwargs: dict = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
    source = str(spec)
    if path.suffix == ".gguf":
        kwargs["gguf_file"] = path.name
        source = str(path.parent)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model {spec}: {str(err).splitlines()[0]}") from err
    model.eval()
    return model, load_tokenizer(spec)


def count_parameters(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def embeddings_tied(model) -> bool:
    """Whether the output layer shares its weight with the input embedding."""
    output = model.get_output_embeddings()
    return output is not None and output.weight is model.get_input_embeddings().weight


def text_config(model):
    """The config that holds ``vocab_size`` (the text config of multimodal models)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def select_embedding_rows(model, kept_ids: list[int]) -> None:
    """Keep only rows ``kept_ids`` (in this order) of the input embedding and the output layer, in place."""
    import torch

    index = torch.tensor(kept_ids, dtype=torch.long)
    tied = embeddings_tied(model)
    embedding = model.get_input_embeddings()
    embedding.weight = torch.nn.Parameter(embedding.weight.data.index_select(0, index).clone())
    embedding.num_embeddings = len(kept_ids)
    if getattr(embedding, "padding_idx", None) is not None:
        old = embedding.padding_idx
        embedding.padding_idx = kept_ids.index(old) if old in kept_ids else None
    output = model.get_output_embeddings()
    if output is not None:
        if tied:
            output.weight = embedding.weight
        else:
            output.weight = torch.nn.Parameter(output.weight.data.index_select(0, index).clone())
        if getattr(output, "bias", None) is not None:
            output.bias = torch.nn.Parameter(output.bias.data.index_select(0, index).clone())
        output.out_features = len(kept_ids)
    text_config(model).vocab_size = len(kept_ids)


def remap_special_ids(model, mapping: dict[int, int]) -> None:
    """Rewrite bos/eos/pad ids in the model and generation configs through ``mapping`` (old id -> new id)."""

    def convert(value):
        if isinstance(value, list):
            return [mapping[v] for v in value if v in mapping]
        return mapping.get(value) if value is not None else None

    configs = [model.config, text_config(model)]
    if getattr(model, "generation_config", None) is not None:
        configs.append(model.generation_config)
    for config in configs:
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(config, name, None) is not None:
                setattr(config, name, convert(getattr(config, name)))


def folder_size(path: Path, pattern: str = "*.safetensors") -> int:
    """Total bytes of the files matching ``pattern`` in ``path``."""
    return sum(f.stat().st_size for f in Path(path).glob(pattern))


def time_forward(model, input_ids, repeats: int = 3) -> float:
    """Median seconds of one forward pass over ``input_ids`` (after one warm-up pass)."""
    import statistics

    import torch

    times = []
    with torch.inference_mode():
        model(input_ids=input_ids)
        for _ in range(repeats):
            start = time.perf_counter()
            model(input_ids=input_ids)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_record(out: Path, name: str, record: dict) -> None:
    """Save a JSON record (resolved config and results) beside an artifact."""
    (out / name).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
