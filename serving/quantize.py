"""``nexus-k model int8``: an int8 (W8A8) copy of a causal LM for vLLM's CPU kernels, made with compressed-tensors.

vLLM's CPU build runs int8 matmuls (oneDNN, AMX) for checkpoints quantised beforehand in the compressed-tensors
W8A8-int8 format, and quantises nothing online for dense layers. This writes such a checkpoint:

- every ``Linear`` but the output layer gets int8 weights with a symmetric scale per output channel (round to
  nearest) and int8 activations quantised per token at run time (symmetric: vLLM's fast AMX/VNNI kernel, which
  also lets LoRA adapters apply; asymmetric activations are more accurate but take vLLM's oneDNN path, which
  releases the weights LoRA needs);
- first, SmoothQuant-style smoothing moves each input channel's activation outliers into the weights: per
  channel, ``s = max|x|^alpha / max|W|^(1 - alpha)`` from a calibration text (``serving/int8_calibration``),
  the activations divided by ``s`` (folded into the RMSNorm before q/k/v and before gate/up, and into
  ``up_proj``'s rows before ``down_proj``) and the weights' columns multiplied by it. The model computes the
  same function in full precision; only what int8 loses changes. The scales are saved beside the weights
  (:data:`SCALES`) so that a LoRA adapter trained on the original model can be rewritten for the copy
  (:func:`adapter_for_int8`). llm-compressor does this too, but cannot be installed beside vLLM's pins.

Two profiles, measured on the demo model (``bench/int8_quality.py``, ``bench/cpu_peer.py``; docs/serving.md):
the default (everything int8) is the fast one, +2.2% held-out Korean perplexity (3.0% without smoothing);
``keep_down_proj`` and ``keep_end_layers`` (``down_proj``'s inputs come after GELU: mostly small and positive,
with rare large values; the end layers lose the most) bring that to +0.2%, but then leave too many bf16
matmuls for the copy to be faster than bf16 on vLLM's CPU kernels. Embeddings, norms and the output layer
keep their dtype. The settings are saved beside the weights (:data:`RECORD`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nexus_k.core.errors import UserError

logger = logging.getLogger(__name__)

RECORD = "nexus_k_int8.json"
SCALES = "nexus_k_smoothing.scales"
"""(safetensors format; not named *.safetensors, which vLLM would load as weights)"""
"""Per layer, the smoothing divisors of the inputs of q/k/v (``.attn``), gate/up (``.mlp``) and down (``.down``)."""
CALIBRATION_FILE = Path(__file__).resolve().parent / "int8_calibration" / "ko.jsonl"
COPIED = ("chat_template.jinja", "generation_config.json", "GEMMA_TERMS.html", "NOTICE.md")
ACTIVATIONS = ("symmetric", "asymmetric")


@dataclass
class Int8Settings:
    """How the copy is quantised; saved as ``nexus_k_int8.json`` beside it."""

    source: str
    """The bf16/fp32 folder quantised."""
    scheme: str = "W8A8"
    """int8 weights (per output channel, symmetric) and int8 activations (per token, dynamic)."""
    activations: str = "symmetric"
    """``symmetric`` (vLLM's fast kernel; LoRA applies) or ``asymmetric`` (a zero point per token: less loss,
    slower, and vLLM's CPU build then cannot apply LoRA adapters)."""
    smoothing_alpha: float = 0.75
    """How much of each channel's activation range moves into the weights (0: no smoothing)."""
    calibration: str = str(CALIBRATION_FILE)
    """JSONL (``{"text": ...}`` per line) or plain text (a text per line) the smoothing scales come from."""
    calibration_tokens: int = 512
    """Tokens at most of each calibration text."""
    keep_end_layers: bool = False
    """Leave the first and the last decoder layer unquantised (models of more than two layers)."""
    keep_down_proj: bool = False
    """Leave every MLP ``down_proj`` unquantised."""
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    """Modules left as they are: the output layer (often tied to the embeddings), and what the options add."""


def _calibration_texts(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"--calibration {path}: no such file")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        try:
            texts = [json.loads(line)["text"] for line in lines]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"--calibration {path}: every line must be a JSON object with a \"text\"") from None
    else:
        texts = lines
    if not texts:
        raise UserError(f"--calibration {path}: no text")
    return texts


def _decoder_layers(model) -> list:
    """The decoder layers, checked to have Llama/Gemma-style attention and gated MLP projections."""
    layers = list(getattr(getattr(model, "model", None), "layers", None) or [])
    wanted = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj",
              "mlp.down_proj", "input_layernorm")
    for layer in layers:
        names = {name for name, _ in layer.named_modules()}
        if not set(wanted) <= names:
            missing = sorted(set(wanted) - names)
            raise UserError(f"smoothing knows Llama/Gemma-style decoder layers; this one lacks {missing} "
                            "(use --smoothing-alpha 0)")
    if not layers:
        raise UserError("smoothing needs model.layers (Llama/Gemma-style); use --smoothing-alpha 0")
    return layers


def _mlp_norm(layer):
    """The norm in front of the MLP: Gemma's pre-feedforward norm, else Llama's post-attention one."""
    return getattr(layer, "pre_feedforward_layernorm", None) or layer.post_attention_layernorm


def _divide_norm(norm, s) -> None:
    """Make ``norm``'s output ``1/s`` of what it was, per channel (Gemma's norms scale by ``1 + weight``)."""
    if "Gemma" in type(norm).__name__:
        norm.weight.copy_((1 + norm.weight.float()) / s - 1)
    else:
        norm.weight.copy_(norm.weight.float() / s)


def smooth(model, tokenizer, texts: list[str], alpha: float, max_tokens: int) -> dict:
    """Fold SmoothQuant scales into ``model`` (in place, float32) from its activations on ``texts``;
    returns the divisors as tensors named ``layers.{i}.attn|mlp|down``."""
    import torch
    from tqdm.auto import tqdm

    layers = _decoder_layers(model)
    seen: dict[int, torch.Tensor] = {}
    watched = [m for layer in layers for m in (layer.self_attn.q_proj, layer.mlp.gate_proj, layer.mlp.down_proj)]

    def record(module, inputs):
        peak = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
        key = id(module)
        seen[key] = torch.maximum(seen[key], peak) if key in seen else peak

    hooks = [m.register_forward_pre_hook(record) for m in watched]
    try:
        with torch.inference_mode():
            for text in tqdm(texts, desc="Calibrating int8 smoothing", unit="text", leave=False):
                ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)
                model(**ids)
    finally:
        for hook in hooks:
            hook.remove()

    def divisors(module, weights) -> torch.Tensor:
        peak_w = torch.cat([w.weight.detach().abs().float() for w in weights]).amax(0).clamp(min=1e-5)
        return (seen[id(module)].clamp(min=1e-5).pow(alpha) / peak_w.pow(1 - alpha)).clamp(min=1e-5)

    scales = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            attn, mlp = layer.self_attn, layer.mlp
            s = divisors(attn.q_proj, (attn.q_proj, attn.k_proj, attn.v_proj))
            _divide_norm(layer.input_layernorm, s)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                proj.weight.mul_(s)
            scales[f"layers.{i}.attn"] = s
            s = divisors(mlp.gate_proj, (mlp.gate_proj, mlp.up_proj))
            _divide_norm(_mlp_norm(layer), s)
            for proj in (mlp.gate_proj, mlp.up_proj):
                proj.weight.mul_(s)
            scales[f"layers.{i}.mlp"] = s
            s = divisors(mlp.down_proj, (mlp.down_proj,))
            mlp.up_proj.weight.div_(s[:, None])
            mlp.down_proj.weight.mul_(s)
            scales[f"layers.{i}.down"] = s
    return scales


def quantize_int8(model: str | Path, out: str | Path, keep: list[str] | None = None,
                  settings: Int8Settings | None = None) -> Path:
    """Write the W8A8 copy of the HF folder ``model`` into ``out`` (created; must not hold a model yet);
    ``keep``: more modules left unquantised (names, or ``re:`` patterns as compressed-tensors reads them);
    ``settings``: the rest (:class:`Int8Settings`; its ``source`` is set to ``model``). Smoothing runs the model
    over the calibration text in float32 on the CPU (4 bytes of memory per parameter)."""
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
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, out = Path(model), Path(out)
    if not (source / "config.json").is_file():
        raise UserError(f"{source}: not a model folder (no config.json)")
    if (out / "config.json").exists():
        raise UserError(f"{out} already holds a model; choose an empty folder")
    settings = Int8Settings(**{**asdict(settings or Int8Settings(source="")), "source": str(source)})
    if settings.activations not in ACTIVATIONS:
        raise UserError(f"--activations must be one of {', '.join(ACTIVATIONS)}, not {settings.activations!r}")
    if not 0 <= settings.smoothing_alpha <= 1:
        raise UserError(f"--smoothing-alpha must be between 0 and 1, not {settings.smoothing_alpha}")
    texts = _calibration_texts(Path(settings.calibration)) if settings.smoothing_alpha else []
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source)
    loaded = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32 if texts else torch.bfloat16).eval()
    scales = smooth(loaded, tokenizer, texts, settings.smoothing_alpha, settings.calibration_tokens) if texts else {}
    loaded.to(torch.bfloat16)
    layer_count = loaded.config.get_text_config().num_hidden_layers
    ignore = list(settings.ignore) + list(keep or [])
    if settings.keep_down_proj:
        ignore.append("re:.*down_proj")
    if settings.keep_end_layers and layer_count > 2:
        ignore.append(rf"re:.*layers\.(0|{layer_count - 1})\..*")
    settings.ignore = ignore
    weights = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel")
    activations = QuantizationArgs(num_bits=8, type="int", symmetric=settings.activations == "symmetric",
                                   strategy="token", dynamic=True)
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
    tokenizer.save_pretrained(out)
    if scales:
        save_file({name: t.contiguous() for name, t in scales.items()}, str(out / SCALES))
    for name in COPIED:
        if (source / name).is_file():
            (out / name).write_bytes((source / name).read_bytes())
    record = {**asdict(settings), "layers": layers, "calibration_texts": len(texts),
              "seconds": round(time.perf_counter() - started, 1)}
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("int8 copy of %s written to %s (%d layers)", source, out, layers)
    return out


_LORA_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(q|k|v|gate|up|down)_proj\.lora_([AB])\.")


def adapter_for_int8(adapter: str | Path, model: str | Path, cache: Path) -> Path:
    """``adapter`` (a LoRA trained on the model ``model`` was copied from) rewritten for the smoothed copy
    ``model``: the A matrices of q/k/v, gate/up and down take the smoothed inputs (columns times the divisors)
    and up's B gives its smoothed output (rows over down's divisors). Unchanged when ``model`` has no
    smoothing scales. The rewritten folder is cached under ``cache`` by the adapter's and the scales' SHA256."""
    from safetensors.torch import load_file, save_file

    adapter, model = Path(adapter), Path(model)
    if not (model / SCALES).is_file():
        return adapter
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise UserError(f"LoRA adapter {adapter}: no adapter_model.safetensors to rewrite for the int8 copy")
    digest = hashlib.sha256(weights.read_bytes() + (model / SCALES).read_bytes()).hexdigest()[:16]
    target = cache / f"{adapter.name}-int8-{digest}"
    if (target / "adapter_model.safetensors").is_file():
        return target
    scales = load_file(str(model / SCALES))
    tensors = load_file(str(weights))
    for name, tensor in tensors.items():
        found = _LORA_KEY.search(name)
        if not found:
            continue
        layer, proj, which = found.groups()
        value = tensor.float()
        if which == "A":
            kind = {"q": "attn", "k": "attn", "v": "attn", "gate": "mlp", "up": "mlp", "down": "down"}[proj]
            value = value * scales[f"layers.{layer}.{kind}"][None, :]
        elif proj == "up":
            value = value / scales[f"layers.{layer}.down"][:, None]
        tensors[name] = value.to(tensor.dtype)
    staging = cache / f".{target.name}-{time.time_ns()}"
    shutil.copytree(adapter, staging, ignore=shutil.ignore_patterns("adapter_model.safetensors"))
    save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
    if target.exists():  # another process wrote it meanwhile
        shutil.rmtree(staging)
    else:
        staging.replace(target)
    return target


def adapters_for(model: str | Path, loras: dict[str, str]) -> dict[str, str]:
    """The LoRA adapters ``loras`` (name -> folder) as they apply on ``model``: rewritten (and cached) when it is a
    smoothed int8 copy, as they are otherwise."""
    from nexus_k.core.paths import cache_dir

    if not (Path(model) / SCALES).is_file():
        return dict(loras)
    return {name: str(adapter_for_int8(path, model, cache_dir("adapters"))) for name, path in loras.items()}
