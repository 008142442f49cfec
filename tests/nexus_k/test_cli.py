"""The front door: `nexus-k` help, `model tiny`, and one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexus_k", *args], capture_output=True, text=True, timeout=900)


def test_help_lists_every_area():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("serve", "model", "tokenizer", "train", "finetune", "eval", "quantum", "keys"):
        assert command in out.stdout


def test_model_tiny_writes_a_loadable_chat_model(tmp_path):
    out = run_cli("model", "tiny", str(tmp_path / "m"), "--seed", "3")
    assert out.returncode == 0, out.stderr
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert model.config.vocab_size >= len(tok)
    text = tok.apply_chat_template([{"role": "user", "content": "안녕"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.decode(tok("동백꽃 😀 漢字 code()", add_special_tokens=False).input_ids) == "동백꽃 😀 漢字 code()"


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    cases = [
        ("serve", "--engine", "tgi", "--model", str(tmp_path)),
        ("serve", "--model", str(tmp_path), "--engine", "hf", "--lora", "broken"),
        ("serve", "--model", str(tmp_path), "--engine", "hf", "--lora", f"x={tmp_path}"),
        ("serve", "--model", str(tmp_path), "--engine-core-priority", "high"),
        ("model", "tiny", str(tmp_path / "m"), "--preset", "huge"),
    ]
    for args in cases:
        out = run_cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
        assert "Traceback" not in out.stderr
