"""The per-layer QUBO solved whole or in windows of layers, and the importance top-k baseline."""

from __future__ import annotations

import numpy as np
import pytest

from quantum_kernels.exact import solve_exact
from quantum_kernels.layer_qubo import (
    build_layer_qubo,
    importance_top_k,
    layer_windows,
    solve_in_windows,
    solve_layer_qubo,
    window_qubo,
)


def _layer_qubo(layers: int, heads: int, keep: int, seed: int):
    rng = np.random.default_rng(seed)
    n = layers * heads
    importance = rng.lognormal(0, 0.75, n)
    corr = np.abs(rng.normal(0, 0.35, (n, n))).clip(max=0.99)
    groups = [(list(range(layer * heads, (layer + 1) * heads)), keep) for layer in range(layers)]
    return build_layer_qubo(importance, corr + corr.T, groups, 0.5, [f"h{i}" for i in range(n)]), importance


def test_windows_hold_whole_layers_within_the_qubit_limit():
    q, _ = _layer_qubo(7, 4, 2, 0)
    windows = layer_windows(q, 10)
    assert [len(w) for w in windows] == [8, 8, 8, 4]
    assert sorted(v for w in windows for v in w) == list(range(28))
    with pytest.raises(ValueError, match="more than 3 qubits"):
        layer_windows(q, 3)


def test_a_window_qubo_plus_the_decided_part_is_the_full_energy():
    q, _ = _layer_qubo(4, 4, 2, 1)
    rng = np.random.default_rng(2)
    decided = np.full(16, -1.0)
    decided[:8] = [1, 0, 1, 0, 0, 1, 1, 0]
    window = list(range(8, 12))
    sub = window_qubo(q, window, decided)
    assert sub.groups == [([0, 1, 2, 3], 2)]
    rest = rng.integers(0, 2, 4)
    for bits in ([1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 1]):
        x = np.concatenate([decided[:8], bits, rest])
        # Energy differences between window choices are the same in the sub-problem and the full one
        # (couplings to the undecided last layer are the only part the window does not see).
        x_ref = np.concatenate([decided[:8], [1, 1, 0, 0], rest])
        seen = q.energy(x) - q.energy(x_ref) - (np.array(bits) - [1, 1, 0, 0]) @ q.symmetric[8:12, 12:] @ rest
        assert seen == pytest.approx(sub.energy(np.array(bits)) - sub.energy(np.array([1, 1, 0, 0])))


def test_one_window_over_everything_is_the_exact_optimum_and_windows_stay_feasible():
    q, _ = _layer_qubo(5, 4, 2, 3)
    best, _ = solve_exact(q)

    def exact(sub):
        return solve_exact(sub)[0], {}

    whole, windows = solve_in_windows(q, exact, 20)
    assert len(windows) == 1 and whole.energy == pytest.approx(best.energy)
    split, windows = solve_in_windows(q, exact, 8)
    assert len(windows) == 3 and split.feasible and split.energy >= best.energy - 1e-12


def test_qaoa_in_windows_reports_p_optimum_against_uniform():
    q, _ = _layer_qubo(4, 4, 2, 4)
    solution, windows = solve_layer_qubo(q, "qaoa", qaoa_reps=1, max_qubits=8, qaoa_maxiter=20)
    assert solution.solver == "qaoa" and solution.feasible
    assert [w.quality["qubits"] for w in windows] == [8, 8]
    for w in windows:
        assert w.quality["feasible_states"] == 36
        assert w.quality["uniform_p_optimum"] == pytest.approx(1 / 36)
        assert 0 < w.quality["p_optimum"] <= 1


def test_importance_top_k_keeps_each_layers_most_important_heads():
    q, importance = _layer_qubo(3, 4, 1, 5)
    x = importance_top_k(importance, q.groups)
    for variables, _ in q.groups:
        assert x[variables].sum() == 1 and x[variables][np.argmax(importance[variables])] == 1


def test_redundancy_is_weighed_per_partner_against_importance_scaled_to_one():
    importance = np.array([2.0, 1.0, 0.5, 4.0])
    redundancy = np.full((4, 4), 0.6)
    q = build_layer_qubo(importance, redundancy, [([0, 1], 1), ([2, 3], 1)], 0.5, [])
    np.testing.assert_allclose(q.linear, -importance / 4.0)
    # Two heads kept in all: each has one partner, so a pair costs w * |corr| = 0.3.
    assert q.quadratic[0, 2] == pytest.approx(0.3) and q.quadratic[2, 0] == 0.0
    q3 = build_layer_qubo(importance, redundancy, [([0, 1, 2, 3], 3)], 0.5, [])
    assert q3.quadratic[0, 1] == pytest.approx(0.15)
