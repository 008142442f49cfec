"""``nexus-k model int8`` on the tiny random model: the folder is a compressed-tensors W8A8-int8 checkpoint (int8
weights, one scale per output channel, dynamic per-token int8 activations, the output layer untouched), loads
back through transformers' compressed-tensors support with logits close to the original's, and bad input is
one line with exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from serving.quantize import RECORD, quantize_int8


def test_int8_copy_is_a_w8a8_checkpoint_close_to_the_original(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = quantize_int8(tiny_model_dir, tmp_path / "int8")
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    group = config["config_groups"]["group_0"]
    weights = group["weights"]
    assert (weights["num_bits"], weights["strategy"], weights["symmetric"]) == (8, "channel", True)
    assert group["input_activations"]["dynamic"] is True and group["input_activations"]["strategy"] == "token"
    assert config["ignore"] == ["lm_head"]
    record = json.loads((out / RECORD).read_text())
    assert record["scheme"] == "W8A8" and record["layers"] > 0

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


def test_keep_leaves_matching_modules_unquantised(tiny_model_dir: Path, tmp_path: Path):
    out = quantize_int8(tiny_model_dir, tmp_path / "int8", keep=["re:.*down_proj"])
    tensors = load_file(out / "model.safetensors")
    down = [k for k in tensors if k.endswith("down_proj.weight")]
    assert down and all(tensors[k].dtype != torch.int8 for k in down)
    assert not any(k.endswith("down_proj.weight_scale") for k in tensors)
    assert any(tensors[k].dtype == torch.int8 for k in tensors if k.endswith("up_proj.weight"))
    record = json.loads((out / RECORD).read_text())
    assert record["ignore"] == ["lm_head", "re:.*down_proj"]


def test_bad_folders_are_one_line_and_exit_2(tmp_path: Path, tiny_model_dir: Path, monkeypatch, capsys):
    from nexus_k.cli import main

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    cases = [(tmp_path / "missing", tmp_path / "o", "not a model folder"),
             (tiny_model_dir, tmp_path / "taken", "already holds a model")]
    for model, out, message in cases:
        monkeypatch.setattr(sys, "argv", ["nexus-k", "model", "int8", "--model", str(model), "--out", str(out)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
