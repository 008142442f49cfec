"""Head scoring, gating and ``nexus-k quantum prune-heads`` on the tiny local models."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from nexus_k.cli import app
from nexus_k.core.errors import UserError
from nexus_k.core.korean_text import bundled_korean_text
from quantum_kernels.head_scores import (
    HeadGates,
    ablation_importance,
    attention_layers,
    perplexity,
    score_heads,
    tokenize_chunks,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sequences = tokenize_chunks(tokenizer, bundled_korean_text(), seq_len=32, max_sequences=3)
    return model, attention_layers(model), sequences


def test_gating_a_head_equals_zeroing_its_output_columns(tiny):
    model, layers, sequences = tiny
    ids = sequences[0]
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with HeadGates(layers) as gates:
            assert torch.allclose(model(input_ids=ids).logits, plain, atol=1e-6)
            gates.gates[1, 0] = 0.0
            gated = model(input_ids=ids).logits
        layer = layers[1]
        saved = layer.o_proj.weight.clone()
        layer.o_proj.weight[:, : layer.head_dim] = 0
        zeroed = model(input_ids=ids).logits
        layer.o_proj.weight.copy_(saved)
    assert not torch.allclose(gated, plain, atol=1e-4)
    assert torch.allclose(gated, zeroed, atol=1e-5)


def test_importance_is_the_absolute_gate_gradient(tiny):
    model, layers, sequences = tiny
    importance, redundancy = score_heads(model, layers, sequences[:1])
    eps = 1e-2
    losses = []
    for sign in (1, -1):
        with torch.no_grad(), HeadGates(layers) as gates:
            gates.gates[0, 1] = 1 + sign * eps
            losses.append(float(model(input_ids=sequences[0], labels=sequences[0]).loss))
    finite_difference = abs(losses[0] - losses[1]) / (2 * eps)
    assert importance[0, 1] == pytest.approx(finite_difference, rel=2e-2, abs=1e-6)
    heads = len(layers) * layers[0].num_heads
    assert redundancy.shape == (heads, heads)
    np.testing.assert_allclose(redundancy, redundancy.T, atol=1e-9)
    np.testing.assert_allclose(np.diag(redundancy), 1.0, atol=1e-6)
    assert redundancy.min() >= 0 and redundancy.max() <= 1


def test_ablation_importance_is_the_loss_increase_of_each_head_alone(tiny):
    model, layers, sequences = tiny
    ids = sequences[0]
    delta = ablation_importance(model, layers, [ids])
    with torch.no_grad():
        base = float(model(input_ids=ids, labels=ids).loss)
        with HeadGates(layers) as gates:
            gates.gates[1, 0] = 0.0
            off = float(model(input_ids=ids, labels=ids).loss)
    assert delta.shape == (2, 2) and delta[1, 0] == pytest.approx(off - base, abs=1e-5)
    assert np.abs(delta).max() > 1e-4


def _prune(model_dir, out, *args):
    return runner.invoke(app, ["quantum", "prune-heads", "--model", str(model_dir), "--out", str(out),
                               "--seq-len", "32", "--max-sequences", "3", "--random-trials", "2", *args])


def test_prune_heads_cli_saves_a_smaller_model(tiny_model_dir, tmp_path):
    out = tmp_path / "pruned"
    result = _prune(tiny_model_dir, out, "--keep-per-layer", "1", "--solver", "exact")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "head_pruning.json").read_text())
    mask = np.array(report["mask"])
    assert mask.shape == (2, 2) and (mask.sum(axis=1) == 1).all()
    assert set(report["perplexity"]) >= {"unpruned", "exact", "sa", "greedy", "importance_top_k", "random_mean",
                                         "pruned"}
    for name in ("exact", "sa", "greedy"):
        answer = report["solutions"][name]
        assert answer["feasible"] and answer["energy"] >= report["solutions"]["exact"]["energy"] - 1e-12
    assert report["config"]["keep_per_layer"] == 1 and len(report["kept"]) == 2
    # The saved model is smaller: one query head of width 64 per layer, the one key-value head kept.
    config = json.loads((out / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (1, 1, 64)
    weights = load_file(out / "model.safetensors")
    assert weights["model.layers.0.self_attn.q_proj.weight"].shape == (64, 128)
    assert weights["model.layers.0.self_attn.o_proj.weight"].shape == (128, 64)
    assert report["sizes"]["structural"] == 1
    assert report["sizes"]["parameters_after"] < report["sizes"]["parameters_before"]
    # The smaller model computes what the chosen gate mask computed, and reloads to the same perplexity.
    assert report["perplexity"]["pruned"] == pytest.approx(report["perplexity"]["exact"], rel=1e-4)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantum_kernels.head_pruning import PruneConfig, split_text

    model = AutoModelForCausalLM.from_pretrained(out, dtype="float32")
    heldout = tokenize_chunks(AutoTokenizer.from_pretrained(out),
                              split_text(PruneConfig(model=str(out), keep_per_layer=1))[1], 32, 3)
    assert perplexity(model, attention_layers(model), heldout) == pytest.approx(
        report["perplexity"]["pruned"], rel=1e-4)


def test_recovery_fine_tunes_the_smaller_model(tiny_model_dir, tmp_path):
    out = tmp_path / "recovered"
    result = _prune(tiny_model_dir, out, "--keep-per-layer", "1", "--solver", "greedy", "--recover-steps", "3",
                    "--recover-lr", "1e-3")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "head_pruning.json").read_text())
    assert report["recovery"]["steps"] == 3
    assert report["recovery"]["last_loss"] < report["recovery"]["first_loss"]
    assert np.isfinite(report["perplexity"]["recovered"])
    assert report["perplexity"]["recovered"] != report["perplexity"]["pruned"]


def test_pruning_a_subset_of_layers_zeroes_heads_in_a_same_shape_model(tiny_model_dir, tmp_path):
    out = tmp_path / "subset"
    result = _prune(tiny_model_dir, out, "--keep-per-layer", "1", "--solver", "sa", "--layers", "1",
                    "--importance", "gradient")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "head_pruning.json").read_text())
    assert report["sizes"]["structural"] == 0 and np.array(report["mask"])[0].sum() == 2
    w = load_file(out / "model.safetensors")["model.layers.1.self_attn.o_proj.weight"]
    assert w.shape == (128, 128)
    dropped = int(np.flatnonzero(np.array(report["mask"])[1] == 0)[0])
    assert w[:, dropped * 64:(dropped + 1) * 64].abs().sum() == 0


@pytest.mark.parametrize(("args", "fragment"), [
    (["--keep-per-layer", "3", "--solver", "sa"], "between 1 and 2"),
    (["--keep-per-layer", "1", "--solver", "magic"], "solver must be one of"),
    (["--keep-per-layer", "1", "--layers", "5"], "--layers must be within"),
    (["--keep-per-layer", "1", "--recover-steps", "-1"], "--recover-steps must be >= 0"),
])
def test_prune_heads_rejects_bad_requests(tiny_model_dir, tmp_path, args, fragment):
    result = _prune(tiny_model_dir, tmp_path / "x", *args)
    assert isinstance(result.exception, UserError) and fragment in str(result.exception)


def test_prune_heads_bad_input_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nexus_k.cli", "quantum", "prune-heads", "--model",
                           str(tmp_path / "missing"), "--keep-per-layer", "1", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: no such model: {tmp_path / 'missing'}"


@pytest.mark.slow
def test_qaoa_prunes_the_small_model(tmp_path):
    from quantum_kernels.head_pruning import PruneConfig, prune_heads
    from training.tiny_model import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "small", preset="small")
    report = prune_heads(PruneConfig(model=str(model_dir), keep_per_layer=2, solver="qaoa", qaoa_reps=2,
                                     seq_len=32, max_sequences=3, random_trials=2), tmp_path / "out")
    assert len(report.heads) == 16 and len(report.kept) == 8
    assert report.solution["solver"] == "qaoa" and report.solution["feasible"]
    # 4 query heads in 2 key-value groups: each group keeps one, so every layer keeps both groups.
    mask = np.array(report.mask)
    assert (mask.reshape(4, 2, 2).sum(axis=2) == 1).all()
    assert report.qaoa_windows and report.qaoa_windows[0]["qubits"] == 16
    assert report.qaoa_windows[0]["feasible_states"] == 2**8
