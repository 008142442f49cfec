"""``nexus-k model int8`` on the tiny random model: the folder is a compressed-tensors W8A8-int8 checkpoint (int8
weights, one scale per output channel, dynamic per-token int8 activations, the output layer untouched; down_proj
and the end layers on request), loads back through transformers' compressed-tensors support with logits close
to the original's; the smoothing leaves what the model computes unchanged (Llama and Gemma 3 norms), a LoRA
adapter rewritten for the smoothed copy gives the original adapter's logits; bad input is one line, exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nexus_k.core.settings import get_settings
from serving.quantize import RECORD, SCALES, Int8Settings, adapter_for_int8, adapters_for, quantize_int8, smooth

TEXTS = ["서울은 대한민국의 수도이다.", "오늘 영화 정말 재미있었어요!", "The quick brown fox jumps over the lazy dog."]


def test_int8_copy_is_a_w8a8_checkpoint_close_to_the_original(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = Int8Settings(source="", keep_end_layers=False, smoothing_alpha=0.0, activations="asymmetric",
                            ignore=["lm_head"])
    out = quantize_int8(tiny_model_dir, tmp_path / "int8", settings=settings)
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    group = config["config_groups"]["group_0"]
    weights = group["weights"]
    assert (weights["num_bits"], weights["strategy"], weights["symmetric"]) == (8, "channel", True)
    activations = group["input_activations"]
    assert (activations["dynamic"], activations["strategy"], activations["symmetric"]) == (True, "token", False)
    assert config["ignore"] == ["lm_head"]
    record = json.loads((out / RECORD).read_text())
    assert record["scheme"] == "W8A8" and record["layers"] > 0 and record["calibration_texts"] == 0
    assert not (out / SCALES).exists()

    tensors = load_file(out / "model.safetensors")
    original = load_file(next(tiny_model_dir.glob("*.safetensors")))
    q_proj = next(k for k in tensors if k.endswith("q_proj.weight"))
    assert tensors[q_proj].dtype == torch.int8
    scale = tensors[q_proj.replace(".weight", ".weight_scale")].float()
    assert scale.shape == (tensors[q_proj].shape[0], 1)
    dequantized = tensors[q_proj].float() * scale
    assert torch.all((dequantized - original[q_proj].float()).abs() <= scale * 0.5 + 1e-2)
    assert not any(k.startswith("lm_head") and k.endswith("weight_scale") for k in tensors)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer("서울은 대한민국의 수도이다.", return_tensors="pt").input_ids
    with torch.inference_mode():
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(ids).logits
        again = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
    assert again.shape == base.shape
    assert float((again - base).abs().mean()) < 0.05 * float(base.abs().mean())


def test_defaults_smooth_on_the_bundled_text_and_keep_the_end_layers(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = quantize_int8(tiny_model_dir, tmp_path / "int8")
    record = json.loads((out / RECORD).read_text())
    assert record["activations"] == "symmetric" and record["smoothing_alpha"] == 0.75
    assert record["calibration_texts"] > 100 and record["ignore"] == ["lm_head"] and record["layers"] == 14
    group = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]
    assert group["input_activations"]["symmetric"] is True
    scales = load_file(str(out / SCALES))
    assert set(scales) == {f"layers.{i}.{kind}" for i in range(2) for kind in ("attn", "mlp", "down")}
    assert all(bool((t > 0).all()) for t in scales.values())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    with torch.inference_mode():
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(ids).logits
        again = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
    assert float((again - base).abs().mean()) < 0.05 * float(base.abs().mean())


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(2)
    config = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8,
                              max_position_embeddings=64)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial norm weights, as trained Gemma norms are
        for name, param in model.named_parameters():
            if name.endswith("layernorm.weight"):
                param.normal_(0, 0.5)
    return model


class _Bytes:
    """A tokenizer stand-in: the UTF-8 bytes of a text."""

    def __call__(self, text, return_tensors="pt", truncation=True, max_length=512):
        return {"input_ids": torch.tensor([list(text.encode())[:max_length]])}


@pytest.mark.parametrize("which", ["llama", "gemma3"])
def test_smoothing_leaves_the_function_unchanged(which: str, tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if which == "llama":
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    else:
        model, tokenizer = _gemma3(), _Bytes()
    ids = tokenizer(TEXTS[1], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        before = model(ids).logits
    norm = model.model.layers[0].input_layernorm.weight.clone()
    scales = smooth(model, tokenizer, TEXTS, alpha=0.75, max_tokens=64)
    with torch.inference_mode():
        after = model(ids).logits
    assert not torch.allclose(norm, model.model.layers[0].input_layernorm.weight)  # something was folded
    assert not torch.allclose(scales["layers.0.mlp"], torch.ones_like(scales["layers.0.mlp"]))
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_an_adapter_rewritten_for_the_smoothed_copy_gives_the_same_logits(tiny_model_dir: Path, tmp_path: Path,
                                                                           monkeypatch):
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer(TEXTS[0], return_tensors="pt").input_ids
    torch.manual_seed(3)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    with torch.inference_mode():
        expected = lora.eval()(ids).logits

    smoothed = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    scales = smooth(smoothed, tokenizer, TEXTS, alpha=0.75, max_tokens=64)
    smoothed.save_pretrained(tmp_path / "smoothed")
    save_file(scales, str(tmp_path / "smoothed" / SCALES))
    rewritten = adapter_for_int8(tmp_path / "adapter", tmp_path / "smoothed", tmp_path / "cache")
    assert rewritten != tmp_path / "adapter" and (rewritten / "adapter_config.json").is_file()
    assert adapter_for_int8(tmp_path / "adapter", tmp_path / "smoothed", tmp_path / "cache") == rewritten  # cached
    assert adapter_for_int8(tmp_path / "adapter", tiny_model_dir, tmp_path / "cache") == tmp_path / "adapter"
    # what both engines call: rewritten under the cache for a smoothed copy, untouched for any other model
    monkeypatch.setenv("NEXUS_K_CACHE_DIR", str(tmp_path / "nexus-cache"))
    get_settings.cache_clear()
    try:
        served = adapters_for(tmp_path / "smoothed", {"ko": str(tmp_path / "adapter")})
        assert Path(served["ko"]).parent == tmp_path / "nexus-cache" / "adapters"
        assert adapters_for(tiny_model_dir, {"ko": str(tmp_path / "adapter")}) == {"ko": str(tmp_path / "adapter")}
    finally:
        get_settings.cache_clear()

    def logits(adapter: Path) -> torch.Tensor:
        base = AutoModelForCausalLM.from_pretrained(tmp_path / "smoothed", dtype=torch.float32)
        with torch.inference_mode():
            return PeftModel.from_pretrained(base, adapter).eval()(ids).logits

    torch.testing.assert_close(logits(rewritten), expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(logits(tmp_path / "adapter"), expected, rtol=1e-3, atol=1e-3)  # unrewritten: off


def test_keep_leaves_matching_modules_unquantised(tiny_model_dir: Path, tmp_path: Path):
    settings = Int8Settings(source="", keep_down_proj=True, keep_end_layers=True)
    out = quantize_int8(tiny_model_dir, tmp_path / "int8", keep=["re:.*o_proj"], settings=settings)
    tensors = load_file(out / "model.safetensors")
    for kept in ("down_proj", "o_proj"):
        names = [k for k in tensors if k.endswith(f"{kept}.weight")]
        assert names and all(tensors[k].dtype != torch.int8 for k in names)
        assert not any(k.endswith(f"{kept}.weight_scale") for k in tensors)
    assert any(tensors[k].dtype == torch.int8 for k in tensors if k.endswith("up_proj.weight"))
    record = json.loads((out / RECORD).read_text())
    # two layers only: keeping both ends would keep everything, so the end layers are quantised too
    assert record["ignore"] == ["lm_head", "re:.*o_proj", "re:.*down_proj"]


def test_bad_folders_are_one_line_and_exit_2(tmp_path: Path, tiny_model_dir: Path, monkeypatch, capsys):
    from nexus_k.cli import main

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    (tmp_path / "bad.jsonl").write_text('{"txt": "no text key"}\n')
    cases = [(tmp_path / "missing", tmp_path / "o", [], "not a model folder"),
             (tiny_model_dir, tmp_path / "taken", [], "already holds a model"),
             (tiny_model_dir, tmp_path / "o", ["--calibration", str(tmp_path / "none.txt")], "no such file"),
             (tiny_model_dir, tmp_path / "o", ["--calibration", str(tmp_path / "bad.jsonl")], '"text"'),
             (tiny_model_dir, tmp_path / "o", ["--activations", "both"], "symmetric, asymmetric"),
             (tiny_model_dir, tmp_path / "o", ["--smoothing-alpha", "1.5"], "between 0 and 1")]
    for model, out, more, message in cases:
        monkeypatch.setattr(sys, "argv", ["nexus-k", "model", "int8", "--model", str(model), "--out", str(out),
                                          *more])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
