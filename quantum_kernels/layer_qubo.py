"""The per-layer head-pruning QUBO and its solvers, whole or over windows of layers small enough to simulate.

``x_h = 1`` keeps head h. Minimise ``-sum_h I_h x_h / max(I) + (w / (K - 1)) sum_{h<g} R_hg x_h x_g`` (K heads
kept in all) with one cardinality constraint per layer (or per key-value group, see
:func:`quantum_kernels.structural.budget_groups`).

QAOA is simulated on at most 24 qubits, so a model's layers are cut into consecutive windows of whole
layers. Windows are solved in order; the couplings of a window's heads to heads already decided in
earlier windows are folded into its linear terms (kept heads add their redundancy), couplings to later
windows are not seen yet. Each window is a QUBO with its own per-layer constraints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from quantum_kernels.qubo import QUBO
from quantum_kernels.solution import Solution

log = logging.getLogger(__name__)

QAOA_MAX_QUBITS = 24
"""Qubits (candidate heads) of one simulated QAOA window at most."""


def build_layer_qubo(importance: np.ndarray, redundancy: np.ndarray, groups: list[tuple[list[int], int]],
                     weight: float, names: list[str]) -> QUBO:
    """The keep-k-per-group QUBO from importances (n,) and |correlations| (n, n).

    The redundancy of a kept head is summed over every other kept head (all layers), so it is divided by
    their number: ``w`` then weighs a head's *mean* |correlation| with the others against its importance
    (scaled to max 1), whatever the model's size. Unscaled, the pairwise sum dwarfed the importances and the
    masks it chose on Gemma 3 270M were worse than random (docs/quantum.md).
    """
    scale = importance.max() if importance.max() > 0 else 1.0
    partners = max(1, sum(k for _, k in groups) - 1)
    quadratic = (weight / partners) * np.triu(np.abs(redundancy), 1)
    return QUBO(-importance / scale, quadratic, 0.0, None, names, groups)


@dataclass
class Window:
    """One window's sub-problem and what QAOA (or another solver) did on it."""

    variables: list[int]
    """Indices of the window's heads in the full QUBO."""
    qubo: QUBO
    """The window's QUBO (earlier windows' decisions folded in)."""
    solution: Solution | None = None
    quality: dict = field(default_factory=dict)
    """QAOA: exact P(optimum), ratio, and the uniform-feasible baseline on this window."""


def layer_windows(qubo: QUBO, max_qubits: int) -> list[list[int]]:
    """Consecutive groups packed into windows of at most ``max_qubits`` variables."""
    windows: list[list[int]] = []
    current: list[int] = []
    for variables, _ in qubo.groups or []:
        if len(variables) > max_qubits:
            raise ValueError(f"a budget group has {len(variables)} heads, more than {max_qubits} qubits")
        if current and len(current) + len(variables) > max_qubits:
            windows.append(current)
            current = []
        current += list(variables)
    if current:
        windows.append(current)
    return windows


def window_qubo(qubo: QUBO, variables: list[int], decided: np.ndarray) -> QUBO:
    """The sub-QUBO over ``variables`` given the decided heads (``decided``: -1 unknown, else 0/1)."""
    index = {v: i for i, v in enumerate(variables)}
    sym = qubo.symmetric
    known = np.flatnonzero(decided >= 0)
    linear = qubo.linear[variables] + sym[np.ix_(variables, known)] @ decided[known]
    quadratic = qubo.quadratic[np.ix_(variables, variables)]
    groups = [([index[v] for v in vs], k) for vs, k in qubo.groups or [] if vs[0] in index]
    names = [qubo.names[v] for v in variables] if qubo.names else []
    return QUBO(linear, quadratic, 0.0, None, names, groups)


def solve_in_windows(qubo: QUBO, solve, max_qubits: int) -> tuple[Solution, list[Window]]:
    """Solve window after window with ``solve(sub_qubo) -> (Solution, quality dict)``."""
    start = time.perf_counter()
    decided = np.full(qubo.num_variables, -1.0)
    windows = []
    for variables in layer_windows(qubo, max_qubits):
        sub = window_qubo(qubo, variables, decided)
        solution, quality = solve(sub)
        decided[variables] = solution.x
        windows.append(Window(variables, sub, solution, quality))
    x = decided.astype(np.int8)
    name = windows[0].solution.solver if windows else "none"
    seconds = time.perf_counter() - start
    return Solution(name, x, float(qubo.energy(x)), bool(qubo.is_feasible(x)), seconds,
                    {"windows": len(windows), "window_qubits": [len(w.variables) for w in windows]}), windows


def qaoa_window_solver(reps: int, formulation: str, seed: int, maxiter: int = 150):
    """A window solver running QAOA on the kernel and reporting exact P(optimum) against uniform sampling."""
    from quantum_kernels.exact import solve_exact
    from quantum_kernels.qaoa import QAOAConfig, QAOASolver

    def solve(sub: QUBO) -> tuple[Solution, dict]:
        _, landscape = solve_exact(sub)
        result = QAOASolver(QAOAConfig(reps=reps, formulation=formulation, seed=seed, maxiter=maxiter)).solve(
            sub, landscape)
        exact = result.quality.get("exact", {})
        quality = {"qubits": sub.num_variables, "feasible_states": sub.num_feasible(),
                   "p_optimum": exact.get("p_optimum"), "uniform_p_optimum": landscape.uniform_p_optimum,
                   "p_optimum_vs_uniform": exact.get("p_optimum_vs_uniform"), "ratio": exact.get("ratio"),
                   "uniform_ratio": landscape.uniform_ratio, "found_optimum":
                   bool(result.solution.energy <= landscape.optimum + 1e-9), "seconds": result.solution.seconds}
        log.info("QAOA window of %d qubits: P(opt) %.4g (uniform %.4g)", sub.num_variables,
                 quality["p_optimum"] or 0.0, quality["uniform_p_optimum"])
        return result.solution, quality
    return solve


def solve_layer_qubo(qubo: QUBO, solver: str, seed: int = 0, qaoa_reps: int = 3,
                     qaoa_formulation: str = "fixed_weight", max_qubits: int = QAOA_MAX_QUBITS,
                     qaoa_maxiter: int = 150) -> tuple[Solution, list[Window]]:
    """One solver's answer on the whole QUBO: QAOA in windows of <= ``max_qubits``; the classical solvers
    on all heads at once (exact only when the feasible product set is small enough to enumerate)."""
    if solver == "qaoa":
        solution, windows = solve_in_windows(
            qubo, qaoa_window_solver(qaoa_reps, qaoa_formulation, seed, qaoa_maxiter), max_qubits)
        solution.solver = "qaoa"
        return solution, windows
    from quantum_kernels.service import run_classical

    return run_classical(qubo, solver, seed), []


def importance_top_k(importance: np.ndarray, groups: list[tuple[list[int], int]]) -> np.ndarray:
    """The most important k heads of every group, ignoring redundancy (the classic baseline)."""
    x = np.zeros(len(importance), dtype=np.int8)
    for variables, k in groups:
        order = np.argsort(-importance[variables], kind="stable")[:k]
        x[np.asarray(variables)[order]] = 1
    return x
