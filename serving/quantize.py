"""``nexus-k model int8``: an int8 (W8A8) copy of a causal LM for vLLM's CPU kernels, made with compressed-tensors.

vLLM's CPU build runs int8 matmuls (oneDNN) for checkpoints quantised beforehand in the compressed-tensors
W8A8-int8 format, and quantises nothing online for dense layers. This writes such a checkpoint without
calibration data: every ``Linear`` but the output layer gets int8 weights with a symmetric scale per output
channel (round to nearest), and int8 activations scaled per token at run time. Embeddings, norms and the output
layer keep their dtype. The settings are saved beside the weights (``nexus_k_int8.json``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nexus_k.core.errors import UserError

logger = logging.getLogger(__name__)

RECORD = "nexus_k_int8.json"
COPIED = ("chat_template.jinja", "generation_config.json", "GEMMA_TERMS.html", "NOTICE.md")


@dataclass
class Int8Settings:
    """How the copy is quantised; saved as ``nexus_k_int8.json`` beside it."""

    source: str
    """The bf16/fp32 folder quantised."""
    scheme: str = "W8A8"
    """int8 weights (per output channel, symmetric) and int8 activations (per token, dynamic)."""
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    """Modules left as they are (the output layer, often tied to the embeddings)."""


def quantize_int8(model: str | Path, out: str | Path, keep: list[str] | None = None) -> Path:
    """Write the W8A8 copy of the HF folder ``model`` into ``out`` (created; must not hold a model yet);
    ``keep``: more modules left unquantised (names, or ``re:`` patterns as compressed-tensors reads them)."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        QuantizationStatus,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, out = Path(model), Path(out)
    if not (source / "config.json").is_file():
        raise UserError(f"{source}: not a model folder (no config.json)")
    if (out / "config.json").exists():
        raise UserError(f"{out} already holds a model; choose an empty folder")
    settings = Int8Settings(source=str(source))
    settings.ignore += list(keep or [])
    started = time.perf_counter()
    loaded = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    weights = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel")
    activations = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights, input_activations=activations)
    config = QuantizationConfig(config_groups={"group_0": scheme}, ignore=settings.ignore,
                                quantization_status=QuantizationStatus.INITIALIZED)
    apply_quantization_config(loaded, config)
    layers = 0
    with torch.no_grad():
        for module in loaded.modules():
            if getattr(module, "quantization_scheme", None) is None:
                continue
            weight = module.weight.float()
            scale, zero = calculate_qparams(weight.amin(dim=1, keepdim=True), weight.amax(dim=1, keepdim=True),
                                            weights)
            module.weight_scale.copy_(scale.reshape(module.weight_scale.shape))
            if hasattr(module, "weight_zero_point"):
                module.weight_zero_point.copy_(zero.reshape(module.weight_zero_point.shape))
            module.quantization_status = QuantizationStatus.FROZEN
            layers += 1
    if not layers:
        raise UserError(f"{source}: no Linear layer to quantise")
    compressor = ModelCompressor.from_pretrained_model(loaded, quantization_format="int-quantized")
    compressor.compress_model(loaded)
    out.mkdir(parents=True, exist_ok=True)
    loaded.save_pretrained(out)
    compressor.update_config(str(out))
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    for name in COPIED:
        if (source / name).is_file():
            (out / name).write_bytes((source / name).read_bytes())
    record = {**asdict(settings), "layers": layers, "seconds": round(time.perf_counter() - started, 1)}
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("int8 copy of %s written to %s (%d layers)", source, out, layers)
    return out
