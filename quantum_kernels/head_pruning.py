"""Attention-head pruning as a QUBO: keep K heads that matter and do not repeat each other.

``x_h = 1`` keeps head h. Minimise ``-sum_h I_h x_h + w * sum_{h<g} R_hg x_h x_g`` subject to
``sum_h x_h = K``, with importances ``I`` scaled to max 1 and redundancies ``R`` = |correlation|. The chosen
mask is written into the model by zeroing the pruned heads' ``o_proj`` columns (the architecture and
shapes are unchanged, so any engine, vLLM included, serves the result as it is; no compute is saved).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from quantum_kernels.qubo import QUBO
from quantum_kernels.solution import Solution

log = logging.getLogger(__name__)

SOLVERS = ("qaoa", "sa", "greedy", "exact")
QAOA_MAX_HEADS = 24
"""Candidate heads QAOA simulates at most (a 2^n statevector)."""
EXACT_MAX_HEADS = 26
"""Candidate heads exact search enumerates at most."""


@dataclass
class PruneConfig:
    """Settings of one ``prune-heads`` run (saved beside the pruned model)."""

    model: str
    """Model folder or hub name, or a ``.gguf`` file."""
    keep: int
    """Heads to keep among the candidates."""
    solver: str = "qaoa"
    """``qaoa``, ``sa``, ``greedy`` or ``exact``."""
    layers: list[int] | None = None
    """Candidate layers (heads elsewhere are always kept); None = every layer."""
    calibration_file: str | None = None
    """UTF-8 Korean text for scoring and held-out perplexity; None = the bundled public-domain story."""
    heldout_fraction: float = 0.25
    """Share of the text (its end) held out for perplexity, never used for scoring."""
    seq_len: int = 128
    """Tokens per calibration sequence."""
    max_sequences: int = 32
    """Calibration sequences at most (held-out: the same cap)."""
    redundancy_weight: float = 0.5
    """Weight ``w`` of the pairwise redundancy penalty."""
    qaoa_reps: int = 3
    """QAOA depth p."""
    qaoa_formulation: str = "fixed_weight"
    """``fixed_weight`` (Dicke + XY mixer, default) or ``penalty``."""
    random_trials: int = 5
    """Random masks averaged for the random baseline."""
    seed: int = 0
    """Seed for QAOA sampling, annealing and random masks."""

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.keep < 1:
            raise ValueError("keep must be >= 1")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError("heldout_fraction must be in (0, 1)")


@dataclass
class PruneReport:
    """What a run measured and chose (written to ``head_pruning.json``)."""

    config: dict
    heads: list[str]
    """Candidate heads as ``L{layer}.H{head}``, in QUBO variable order."""
    importance: list[float]
    redundancy: list[list[float]]
    kept: list[str]
    mask: list[list[int]]
    """Final (layers, heads) mask over the whole model: 1 = kept."""
    solution: dict
    perplexity: dict[str, float]
    """Held-out perplexity: ``unpruned``, ``<solver>``, ``importance_greedy``, ``random_mean``..."""
    qubo: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def build_head_qubo(importance: np.ndarray, redundancy: np.ndarray, keep: int, weight: float,
                    names: list[str]) -> QUBO:
    """The keep-K-heads QUBO from importances (n,) and |correlations| (n, n)."""
    scale = importance.max() if importance.max() > 0 else 1.0
    quadratic = weight * np.triu(np.abs(redundancy), 1)
    return QUBO(-importance / scale, quadratic, 0.0, keep, names)


def solve_head_qubo(qubo: QUBO, config: PruneConfig) -> Solution:
    """Choose the heads to keep with the configured solver."""
    n = qubo.num_variables
    if config.solver == "qaoa":
        if n > QAOA_MAX_HEADS:
            raise ValueError(f"{n} candidate heads is too many for simulated QAOA (max {QAOA_MAX_HEADS}); "
                             f"restrict --layers or use --solver sa")
        from quantum_kernels.qaoa import QAOAConfig, QAOASolver

        cfg = QAOAConfig(reps=config.qaoa_reps, formulation=config.qaoa_formulation, seed=config.seed)
        return QAOASolver(cfg).solve(qubo).solution
    if config.solver == "exact" and n > EXACT_MAX_HEADS:
        raise ValueError(f"{n} candidate heads is too many for exact search (max {EXACT_MAX_HEADS})")
    from quantum_kernels.service import run_classical

    return run_classical(qubo, config.solver, config.seed)


def _load(model_ref: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_ref)
    kwargs = {}
    if path.suffix == ".gguf":
        kwargs, model_ref = {"gguf_file": path.name}, str(path.parent)
    tokenizer = AutoTokenizer.from_pretrained(model_ref, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(model_ref, dtype="float32", **kwargs)
    return model, tokenizer


def _texts(config: PruneConfig) -> tuple[str, str]:
    if config.calibration_file:
        text = Path(config.calibration_file).read_text(encoding="utf-8")
    else:
        from nexus_k.core.korean_text import bundled_korean_text

        text = bundled_korean_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cut = max(1, round(len(lines) * (1 - config.heldout_fraction)))
    if cut >= len(lines):
        raise ValueError("calibration text needs at least two non-empty lines (scoring and held-out)")
    return "\n".join(lines[:cut]), "\n".join(lines[cut:])


def prune_heads(config: PruneConfig, out_dir: str | Path) -> PruneReport:
    """Score heads, solve the QUBO, compare perplexities, zero the pruned heads and save the model."""
    from quantum_kernels.head_scores import (
        attention_layers,
        perplexity,
        score_heads,
        tokenize_chunks,
        zero_pruned_heads,
    )

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    model, tokenizer = _load(config.model)
    layers = attention_layers(model)
    num_layers, num_heads = len(layers), layers[0].num_heads
    candidates = sorted(set(config.layers)) if config.layers is not None else list(range(num_layers))
    if any(not 0 <= layer < num_layers for layer in candidates):
        raise ValueError(f"--layers must be within 0..{num_layers - 1}")
    flat = [layer * num_heads + h for layer in candidates for h in range(num_heads)]
    names = [f"L{i // num_heads}.H{i % num_heads}" for i in flat]
    if config.keep > len(flat):
        raise ValueError(f"keep={config.keep} but there are only {len(flat)} candidate heads")
    calib_text, heldout_text = _texts(config)
    calib = tokenize_chunks(tokenizer, calib_text, config.seq_len, config.max_sequences)
    heldout = tokenize_chunks(tokenizer, heldout_text, config.seq_len, config.max_sequences)
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    importance_all, redundancy_all = score_heads(model, layers, calib)
    importance = importance_all.reshape(-1)[flat]
    redundancy = redundancy_all[np.ix_(flat, flat)]
    seconds["score"] = time.perf_counter() - t
    qubo = build_head_qubo(importance, redundancy, config.keep, config.redundancy_weight, names)
    solution = solve_head_qubo(qubo, config)
    seconds["solve"] = solution.seconds

    def full_mask(keep_flags: np.ndarray) -> np.ndarray:
        mask = np.ones(num_layers * num_heads, dtype=np.int64)
        mask[flat] = keep_flags
        return mask.reshape(num_layers, num_heads)

    t = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    top = np.zeros(len(flat), dtype=np.int64)
    top[np.argsort(-importance, kind="stable")[: config.keep]] = 1
    ppl = {"unpruned": perplexity(model, layers, heldout),
           config.solver: perplexity(model, layers, heldout, full_mask(solution.x)),
           "importance_greedy": perplexity(model, layers, heldout, full_mask(top))}
    randoms = []
    for _ in range(config.random_trials):
        pick = np.zeros(len(flat), dtype=np.int64)
        pick[rng.choice(len(flat), config.keep, replace=False)] = 1
        randoms.append(perplexity(model, layers, heldout, full_mask(pick)))
    ppl["random_mean"] = float(np.mean(randoms))
    ppl["random_min"] = float(np.min(randoms))
    ppl["random_max"] = float(np.max(randoms))
    seconds["evaluate"] = time.perf_counter() - t

    mask = full_mask(solution.x)
    zero_pruned_heads(layers, mask)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = PruneReport(
        config=asdict(config), heads=names, importance=importance.tolist(), redundancy=redundancy.tolist(),
        kept=[names[i] for i in np.flatnonzero(solution.x)], mask=mask.tolist(), solution=solution.to_dict(),
        perplexity=ppl, qubo=qubo.to_dict(), seconds=seconds)
    (out / "head_pruning.json").write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False))
    log.info("kept %d of %d candidate heads; held-out perplexity %s", config.keep, len(flat), ppl)
    return report
