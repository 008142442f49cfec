"""``nexus-k finetune`` end to end on the tiny model: a standard peft adapter, report, card, redaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nexus_k.cli import app
from nexus_k.core.errors import UserError
from training.finetune import FinetuneConfig, run_finetune

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_finetune_writes_a_standard_lora_adapter_and_report(tiny_model_dir: Path, chat_file: Path, tmp_path: Path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    args = [
        "finetune",
        "--base",
        str(tiny_model_dir),
        "--data",
        str(chat_file),
        "--out",
        str(out),
        "--max-steps",
        "6",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--lr",
        "5e-3",
        "--lora-r",
        "4",
        "--heldout-fraction",
        "0.25",
        "--threads",
        "1",
        "--precision",
        "fp32",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 personal data items redacted" in result.output

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert set(config["target_modules"]) == PROJECTIONS
    weights = load_file(out / "adapter_model.safetensors")
    assert weights and all(k.startswith("base_model.model.") and ".lora_" in k for k in weights)
    assert any(float(v.abs().sum()) > 0 for k, v in weights.items() if "lora_B" in k)

    report = json.loads((out / "training_report.json").read_text())
    assert report["data"]["redactions"]["phone"] == 1 and report["data"]["redactions"]["email"] == 1
    assert report["data"]["training_conversations"] == 6 and report["data"]["heldout_conversations"] == 2
    train = report["history"]["train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert train[-1]["loss"] < train[0]["loss"]
    assert [e["step"] for e in report["history"]["eval"]] == [0, 6]
    card = (out / "README.md").read_text()
    assert "| phone | 1 |" in card and "base_model: " in card
    assert (out / "loss_curve.png").stat().st_size > 5000
    assert (out / "finetune_config.yaml").exists()
    assert not (out / "checkpoints").exists()

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, out)(ids).logits
    assert not torch.allclose(before, tuned)


def test_unreachable_base_model_is_a_clear_error_offline(chat_file: Path, tmp_path: Path) -> None:
    cfg = FinetuneConfig(base="no-such-org/no-such-model", data=str(chat_file), out=str(tmp_path / "o"))
    with pytest.raises(UserError, match="cannot load a tokenizer from 'no-such-org/no-such-model'"):
        run_finetune(cfg)
    cfg = FinetuneConfig(base=str(tmp_path / "missing"), data=str(chat_file), out=str(tmp_path / "o"))
    with pytest.raises(UserError, match="not found"):
        run_finetune(cfg)
