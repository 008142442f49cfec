"""``nexus-k train pretrain``: artifacts, held-out bits/char, exact resume after a kill, DDP/FSDP parity."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nexus_k.cli import app
from training.config import PretrainConfig, load_config
from training.pretrain import run_pretrain


def _history(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["history"]


def test_pretrain_writes_a_loadable_model_metrics_and_plot(pretrain_yaml: Callable[..., Path], tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "pretrain", "--config", str(pretrain_yaml(out=run))])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    evals = metrics["history"]["eval"]
    assert [e["step"] for e in evals] == [0, 4, 8]
    assert evals[-1]["loss"] < evals[0]["loss"]
    chars = metrics["data"]["heldout_characters"]
    assert evals[-1]["bits_per_char"] == pytest.approx(evals[-1]["loss"] * evals[-1]["tokens"] / math.log(2) / chars)
    assert metrics["summary"]["tokens"] == 8 * 8 * 64
    assert (run / "loss_curve.png").stat().st_size > 5000
    assert load_config(PretrainConfig, run / "resolved_config.yaml").train.max_steps == 8
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    tok = AutoTokenizer.from_pretrained(run / "model")
    assert model.config.model_type == "llama" and model.config.hidden_size == 64
    assert model.config.vocab_size >= len(tok)
    assert (run / "model" / "model.safetensors").exists() and (run / "model" / "README.md").exists()


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_losses(pretrain_yaml: Callable[..., Path], tmp_path: Path) -> None:
    sections = {"train": {"max_steps": 40, "checkpoint_every": 4, "eval_every": 0}}
    reference = tmp_path / "reference"
    run_pretrain(load_config(PretrainConfig, pretrain_yaml(out=reference, **sections)))

    killed = tmp_path / "killed"
    cfg = pretrain_yaml(out=killed, **sections)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexus_k.cli", "train", "pretrain", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 600
    while not list((killed / "checkpoints").glob("step-*")):
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"

    run_pretrain(load_config(PretrainConfig, cfg))  # resumes from the newest checkpoint
    want, got = _history(reference), _history(killed)
    assert [r["step"] for r in got["train"]] == list(range(1, 41))
    for a, b in zip(want["train"], got["train"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7), (a["step"], a["loss"], b["loss"])
    assert got["eval"][-1]["loss"] == pytest.approx(want["eval"][-1]["loss"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_at_the_same_global_batch(
    pretrain_yaml: Callable[..., Path], tmp_path: Path, strategy: str
) -> None:
    """Global batch 4 sequences: 1 process x 2 micro x 2 accumulation vs 2 processes x 2 micro.
    Tolerance 1e-4 relative per step (fp32; only the reduction order differs)."""
    loop = {"max_steps": 6, "micro_batch_size": 2, "checkpoint_every": 0, "eval_every": 0}
    one = tmp_path / "one"
    run_pretrain(load_config(PretrainConfig, pretrain_yaml(out=one, train={**loop, "grad_accum_steps": 2})))
    two = tmp_path / "two"
    cfg = pretrain_yaml(out=two, train={**loop, "grad_accum_steps": 1}, distributed={"strategy": strategy})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "nexus_k.cli",
        "train",
        "pretrain",
        "--config",
        str(cfg),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want, got = _history(one), _history(two)
    assert json.loads((two / "metrics.json").read_text())["world_size"] == 2
    for a, b in zip(want["train"], got["train"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a["step"], a["loss"], b["loss"])
    assert got["eval"][-1]["loss"] == pytest.approx(want["eval"][-1]["loss"], rel=1e-4)
