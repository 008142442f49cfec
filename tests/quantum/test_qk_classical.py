"""Exact search, simulated annealing and greedy against brute force."""

from __future__ import annotations

import numpy as np
import pytest

import quantum_kernels.exact as exact_module
from quantum_kernels.anneal import AnnealConfig, simulated_annealing
from quantum_kernels.exact import solve_exact
from quantum_kernels.greedy import greedy, uniform_feasible_samples
from quantum_kernels.qubo import QUBO, index_to_bits, random_head_pruning_qubo


def _brute(q: QUBO):
    n = q.num_variables
    states = index_to_bits(np.arange(2**n), n)
    e = q.energy(states)
    ok = np.asarray(q.is_feasible(states))
    return e[ok].min(), e[ok].max(), e[ok].mean(), int(ok.sum())


@pytest.mark.parametrize("k", [None, 0, 3, 10])
def test_exact_matches_brute_force_across_blocks(monkeypatch, k):
    # Small blocks exercise the high/low split that n > 20 uses.
    monkeypatch.setattr(exact_module, "BLOCK_BITS", 4)
    rng = np.random.default_rng(7)
    q = QUBO(rng.normal(size=10), np.triu(rng.normal(size=(10, 10)), 1), 0.3, k)
    solution, land = solve_exact(q)
    lo, hi, mean, count = _brute(q)
    assert solution.energy == pytest.approx(lo)
    assert q.energy(solution.x) == pytest.approx(lo)
    assert (land.optimum, land.worst, land.num_feasible) == (pytest.approx(lo), pytest.approx(hi), count)
    assert land.mean == pytest.approx(mean)
    assert land.uniform_p_optimum == pytest.approx(1 / count)
    if count > 1:
        assert land.ratio(lo) == pytest.approx(1.0) and land.ratio(hi) == pytest.approx(0.0)
    else:
        assert land.ratio(lo) == 1.0  # a single feasible state is optimal and worst at once


@pytest.mark.parametrize("k", [None, 6])
def test_annealing_finds_the_optimum_of_a_small_problem(k):
    q = random_head_pruning_qubo(12, 6, seed=3)
    q.hamming_weight = k
    best, _ = solve_exact(q)
    found = simulated_annealing(q, AnnealConfig(sweeps=200, chains=16, seed=1))
    assert found.feasible
    assert found.energy == pytest.approx(best.energy)


def test_swap_moves_never_leave_the_feasible_set():
    q = random_head_pruning_qubo(9, 4, seed=5)
    found = simulated_annealing(q, AnnealConfig(sweeps=5, chains=4, t_start=50, t_end=40))
    assert int(found.x.sum()) == 4


def test_greedy_is_feasible_and_no_better_than_exact():
    q = random_head_pruning_qubo(12, 5, seed=8)
    g, (best, _) = greedy(q), solve_exact(q)
    assert g.feasible and int(g.x.sum()) == 5
    assert g.energy >= best.energy - 1e-12


def test_uniform_feasible_samples_have_the_right_weight():
    q = random_head_pruning_qubo(10, 4, seed=1)
    xs = uniform_feasible_samples(q, 500, seed=2)
    assert (xs.sum(1) == 4).all()
    # Every variable is switched on about 40% of the time.
    assert np.abs(xs.mean(0) - 0.4).max() < 0.1
