"""Head scoring, gating and ``nexus-k quantum prune-heads`` on the tiny local models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from nexus_k.cli import app
from nexus_k.core.errors import UserError
from nexus_k.core.korean_text import bundled_korean_text
from quantum_kernels.head_scores import HeadGates, attention_layers, perplexity, score_heads, tokenize_chunks

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


def test_prune_heads_cli_saves_a_pruned_model(tiny_model_dir, tmp_path):
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["quantum", "prune-heads", "--model", str(tiny_model_dir), "--keep", "2",
                                 "--solver", "exact", "--out", str(out), "--seq-len", "32",
                                 "--max-sequences", "3", "--random-trials", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "head_pruning.json").read_text())
    mask = np.array(report["mask"])
    assert mask.shape == (2, 2) and mask.sum() == 2
    assert set(report["perplexity"]) >= {"unpruned", "exact", "importance_greedy", "random_mean"}
    assert report["config"]["keep"] == 2 and len(report["kept"]) == 2
    # The mask is in the weights: pruned heads' o_proj columns are zero, kept ones are not.
    weights = load_file(out / "model.safetensors")
    head_dim = 128 // 2
    for layer in range(2):
        w = weights[f"model.layers.{layer}.self_attn.o_proj.weight"]
        for head in range(2):
            block = w[:, head * head_dim:(head + 1) * head_dim]
            assert bool(block.abs().sum() == 0) == (mask[layer, head] == 0)
    assert (out / "tokenizer.json").exists() and (out / "config.json").exists()
    # Reloaded, the saved model reproduces the held-out perplexity the report gives for the chosen mask.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from quantum_kernels.head_pruning import PruneConfig, _texts

    model = AutoModelForCausalLM.from_pretrained(out, dtype="float32")
    heldout = tokenize_chunks(AutoTokenizer.from_pretrained(out),
                              _texts(PruneConfig(model=str(out), keep=2))[1], 32, 3)
    assert perplexity(model, attention_layers(model), heldout) == pytest.approx(
        report["perplexity"]["exact"], rel=1e-5)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--keep", "9", "--solver", "sa"], "only 4 candidate heads"),
    (["--keep", "2", "--solver", "magic"], "solver must be one of"),
    (["--keep", "2", "--layers", "5"], "--layers must be within"),
])
def test_prune_heads_rejects_bad_requests(tiny_model_dir, tmp_path, args, fragment):
    result = runner.invoke(app, ["quantum", "prune-heads", "--model", str(tiny_model_dir), "--out",
                                 str(tmp_path / "x"), "--seq-len", "32", "--max-sequences", "2", *args])
    assert isinstance(result.exception, UserError) and fragment in str(result.exception)


@pytest.mark.slow
def test_qaoa_prunes_the_small_model(tmp_path):
    from quantum_kernels.head_pruning import PruneConfig, prune_heads
    from training.tiny_model import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "small", preset="small")
    report = prune_heads(PruneConfig(model=str(model_dir), keep=8, solver="qaoa", qaoa_reps=2, seq_len=32,
                                     max_sequences=3, random_trials=2), tmp_path / "out")
    assert len(report.heads) == 16 and len(report.kept) == 8
    assert report.solution["solver"] == "qaoa" and report.solution["feasible"]
    assert np.array(report.mask).sum() == 8
