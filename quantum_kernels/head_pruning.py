"""Attention-head pruning as a QUBO with one budget per layer, written out as a genuinely smaller model.

``x_h = 1`` keeps head h. Minimise ``-sum_h I_h x_h + w/(K-1) sum_{h<g} R_hg x_h x_g`` subject to ``keep k of
the H heads of every pruned layer`` (importances ``I`` scaled to max 1, redundancies ``R`` = |correlation|).
Every layer keeping the same number of query heads is what lets the chosen mask be written as a smaller
architecture (:mod:`quantum_kernels.structural`) that transformers and vLLM serve with fewer FLOPs and
bytes. Every solver's answer is reported on the same QUBO, with held-out perplexities.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from quantum_kernels.layer_qubo import QAOA_MAX_QUBITS, build_layer_qubo, importance_top_k, solve_layer_qubo
from quantum_kernels.solution import Solution

log = logging.getLogger(__name__)

SOLVERS = ("qaoa", "sa", "greedy", "exact")


@dataclass
class PruneConfig:
    """Settings of one ``prune-heads`` run (saved beside the pruned model)."""

    model: str
    """Model folder or hub name, or a ``.gguf`` file."""
    keep_per_layer: int
    """Query heads every pruned layer keeps."""
    solver: str = "qaoa"
    """``qaoa``, ``sa``, ``greedy`` or ``exact``: whose mask is written out."""
    layers: list[int] | None = None
    """Layers to prune (None = all). Only pruning every layer gives a smaller checkpoint; with a subset the
    pruned heads are zeroed in a same-shape model instead (no speed-up)."""
    calibration_file: str | None = None
    """UTF-8 Korean text for scoring and held-out perplexity; None = the bundled public-domain story."""
    heldout_fraction: float = 0.25
    """Share of the text (its end) held out for perplexity, never used for scoring or recovery."""
    seq_len: int = 128
    """Tokens per calibration sequence."""
    max_sequences: int = 32
    """Calibration sequences at most (held-out: the same cap)."""
    redundancy_weight: float = 0.5
    """Weight ``w`` of a kept head's mean |correlation| with the other kept heads, against its importance."""
    importance: str = "ablation"
    """``ablation`` (loss increase with each head off alone: one forward pass per head and sequence) or
    ``gradient`` (|dL/d gate| at gates = 1, one backward pass per sequence; cheaper, but on Gemma 3 270M its
    masks were worse than random ones, docs/quantum.md)."""
    ablation_sequences: int = 8
    """Calibration sequences the ablation importance averages over (the first ones)."""
    qaoa_reps: int = 3
    """QAOA depth p."""
    qaoa_formulation: str = "fixed_weight"
    """``fixed_weight`` (Dicke product + per-layer XY rings, default) or ``penalty``."""
    qaoa_max_qubits: int = QAOA_MAX_QUBITS
    """QAOA runs on windows of whole layers with at most this many heads."""
    random_trials: int = 5
    """Random feasible masks averaged for the random baseline."""
    recover_steps: int = 0
    """Full fine-tuning steps on the calibration text after pruning (0: none)."""
    recover_lr: float = 5e-5
    """Peak learning rate of the recovery fine-tune."""
    seed: int = 0
    """Seed for QAOA sampling, annealing, random masks and recovery data order."""

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.keep_per_layer < 1:
            raise ValueError("--keep-per-layer must be >= 1")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError("heldout_fraction must be in (0, 1)")
        if self.importance not in ("gradient", "ablation"):
            raise ValueError(f"importance must be gradient or ablation, got {self.importance!r}")
        if self.recover_steps < 0:
            raise ValueError("--recover-steps must be >= 0")
        if not 1 <= self.qaoa_max_qubits <= QAOA_MAX_QUBITS:
            raise ValueError(f"qaoa_max_qubits must be in [1, {QAOA_MAX_QUBITS}]")


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
    """The chosen solver's answer."""
    solutions: dict[str, dict]
    """Every solver's answer and energy on the same QUBO (``exact`` when small enough to enumerate)."""
    perplexity: dict[str, float]
    """Held-out perplexity: ``unpruned``, each solver's mask, ``importance_top_k``, ``random_mean``...,
    ``pruned`` (the saved model before recovery) and ``recovered`` (after)."""
    sizes: dict[str, float]
    """Parameters and checkpoint bytes before and after; ``structural`` is 1 when the model shrank."""
    qubo: dict = field(default_factory=dict)
    qaoa_windows: list[dict] = field(default_factory=list)
    """Per QAOA window: qubits, feasible states, exact P(optimum) against uniform feasible sampling."""
    recovery: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def load_model(model_ref: str):
    """Model (float32) and tokenizer from a folder, hub name or ``.gguf`` file, and its saved dtype."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(model_ref)
    kwargs = {}
    if path.suffix == ".gguf":
        kwargs, model_ref = {"gguf_file": path.name}, str(path.parent)
    tokenizer = AutoTokenizer.from_pretrained(model_ref, **kwargs)
    source_config = AutoConfig.from_pretrained(model_ref, **kwargs)
    dtype = getattr(source_config, "dtype", None) or "float32"
    model = AutoModelForCausalLM.from_pretrained(model_ref, dtype="float32", **kwargs)
    model.eval()
    return model, tokenizer, dtype


def split_text(config: PruneConfig) -> tuple[str, str]:
    """Calibration text and held-out text (the last ``heldout_fraction`` of the lines)."""
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


def checkpoint_bytes(folder: Path) -> int:
    """Bytes of a folder's weight files (``*.safetensors`` / ``*.bin``)."""
    return sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in folder.glob(pattern))


def prune_heads(config: PruneConfig, out_dir: str | Path) -> PruneReport:
    """Score heads, solve the per-layer QUBO with every solver, compare perplexities, write the smaller model
    (recovered if asked) and ``head_pruning.json``."""
    import torch

    from quantum_kernels.head_scores import (
        ablation_importance,
        attention_layers,
        perplexity,
        score_heads,
        tokenize_chunks,
    )
    from quantum_kernels.recovery import RecoveryConfig, recover
    from quantum_kernels.structural import (
        attention_shape,
        budget_groups,
        check_writable_budget,
        count_parameters,
        prune_attention_heads,
        zero_heads,
    )

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    model, tokenizer, dtype = load_model(config.model)
    shape = attention_shape(model)
    layers = attention_layers(model)
    num_layers, num_heads = shape.num_layers, shape.num_heads
    candidates = sorted(set(config.layers)) if config.layers is not None else list(range(num_layers))
    if any(not 0 <= layer < num_layers for layer in candidates):
        raise ValueError(f"--layers must be within 0..{num_layers - 1}")
    groups = budget_groups(shape, candidates, config.keep_per_layer)
    if len(candidates) == num_layers:
        check_writable_budget(model, config.keep_per_layer)  # before scoring, not after
    if config.solver == "qaoa" and max(len(v) for v, _ in groups) > config.qaoa_max_qubits:
        raise ValueError(f"a layer's {num_heads} heads exceed {config.qaoa_max_qubits} qubits; use --solver sa")
    flat = [layer * num_heads + h for layer in candidates for h in range(num_heads)]
    names = [f"L{i // num_heads}.H{i % num_heads}" for i in flat]
    calib_text, heldout_text = split_text(config)
    calib = tokenize_chunks(tokenizer, calib_text, config.seq_len, config.max_sequences)
    heldout = tokenize_chunks(tokenizer, heldout_text, config.seq_len, config.max_sequences)
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    importance_all, redundancy_all = score_heads(model, layers, calib)
    if config.importance == "ablation":
        importance_all = ablation_importance(model, layers, calib[: config.ablation_sequences])
    importance = importance_all.reshape(-1)[flat]
    redundancy = redundancy_all[np.ix_(flat, flat)]
    seconds["score"] = time.perf_counter() - t
    qubo = build_layer_qubo(importance, redundancy, groups, config.redundancy_weight, names)

    t = time.perf_counter()
    solutions: dict[str, Solution] = {}
    windows = []
    for solver in [config.solver] + [s for s in ("sa", "greedy", "exact") if s != config.solver]:
        try:
            solutions[solver], found = solve_layer_qubo(
                qubo, solver, config.seed, config.qaoa_reps, config.qaoa_formulation, config.qaoa_max_qubits)
        except ValueError as err:
            if solver == config.solver:
                raise
            log.info("%s skipped: %s", solver, err)
            continue
        windows = windows or found
    solution = solutions[config.solver]
    seconds["solve"] = time.perf_counter() - t

    def full_mask(keep_flags: np.ndarray) -> np.ndarray:
        mask = np.ones(num_layers * num_heads, dtype=np.int64)
        mask[flat] = keep_flags
        return mask.reshape(num_layers, num_heads)

    t = time.perf_counter()
    cache: dict[bytes, float] = {}

    def masked_perplexity(keep_flags: np.ndarray | None) -> float:
        key = b"" if keep_flags is None else np.asarray(keep_flags, dtype=np.int8).tobytes()
        if key not in cache:
            cache[key] = perplexity(model, layers, heldout, None if keep_flags is None else full_mask(keep_flags))
        return cache[key]

    ppl = {"unpruned": masked_perplexity(None)}
    ppl.update({name: masked_perplexity(s.x) for name, s in solutions.items()})
    ppl["importance_top_k"] = masked_perplexity(importance_top_k(importance, groups))
    from quantum_kernels.greedy import uniform_feasible_samples

    randoms = [masked_perplexity(x) for x in uniform_feasible_samples(qubo, config.random_trials, config.seed)]
    if randoms:
        ppl.update(random_mean=float(np.mean(randoms)), random_min=float(np.min(randoms)),
                   random_max=float(np.max(randoms)))
    seconds["evaluate"] = time.perf_counter() - t

    mask = full_mask(solution.x)
    params_before = count_parameters(model)
    structural = len(candidates) == num_layers
    if structural:
        pruned = prune_attention_heads(model, mask)
    else:
        log.warning("only layers %s are pruned: heads are zeroed in a same-shape model (no smaller checkpoint)",
                    candidates)
        zero_heads(model, mask)
        pruned = model
    ppl["pruned"] = perplexity(pruned, attention_layers(pruned), heldout)
    recovery: dict = {}
    if config.recover_steps:
        t = time.perf_counter()
        torch.manual_seed(config.seed)
        recovery = recover(pruned, calib, RecoveryConfig(config.recover_steps, config.recover_lr, seed=config.seed))
        ppl["recovered"] = perplexity(pruned, attention_layers(pruned), heldout)
        seconds["recover"] = time.perf_counter() - t

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pruned.to(getattr(torch, str(dtype).replace("torch.", ""))).save_pretrained(out)
    tokenizer.save_pretrained(out)
    source = Path(config.model)
    sizes = {"structural": int(structural), "parameters_before": params_before,
             "parameters_after": count_parameters(pruned), "checkpoint_bytes_after": checkpoint_bytes(out),
             "query_heads_before": num_heads, "query_heads_after": int(mask.sum(axis=1).max())}
    if source.is_dir():
        sizes["checkpoint_bytes_before"] = checkpoint_bytes(source)
    report = PruneReport(
        config=asdict(config), heads=names, importance=importance.tolist(), redundancy=redundancy.tolist(),
        kept=[names[i] for i in np.flatnonzero(solution.x)], mask=mask.tolist(), solution=solution.to_dict(),
        solutions={name: s.to_dict() for name, s in solutions.items()}, perplexity=ppl, sizes=sizes,
        qubo=qubo.to_dict(), qaoa_windows=[w.quality for w in windows], recovery=recovery, seconds=seconds)
    (out / "head_pruning.json").write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False))
    log.info("kept %d heads per layer; held-out perplexity %s", config.keep_per_layer, ppl)
    return report
