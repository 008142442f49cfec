"""The QUBO type: energies, Ising conversion, penalty form, JSON round trip."""

from __future__ import annotations

import numpy as np
import pytest

from quantum_kernels.qubo import QUBO, index_to_bits, popcounts, random_head_pruning_qubo


def _random_qubo(n: int, seed: int, k: int | None = None) -> QUBO:
    rng = np.random.default_rng(seed)
    return QUBO(rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1), rng.normal(), k)


def test_all_energies_match_direct_evaluation_and_ising_diagonal():
    q = _random_qubo(7, seed=1)
    states = index_to_bits(np.arange(2**7), 7)
    direct = q.energy(states)
    np.testing.assert_allclose(q.all_energies(), direct, atol=1e-12)
    diag = np.real(q.to_ising().to_matrix(sparse=True).diagonal())
    np.testing.assert_allclose(diag, direct, atol=1e-12)


def test_lower_triangle_and_diagonal_are_folded_into_canonical_form():
    q = QUBO([1.0, 0.0], [[0.5, 0.0], [2.0, 0.0]])
    assert q.linear.tolist() == [1.5, 0.0]
    assert q.quadratic[0, 1] == 2.0 and q.quadratic[1, 0] == 0.0
    assert q.energy(np.array([1, 1])) == pytest.approx(3.5)


def test_penalty_form_keeps_feasible_energies_and_punishes_the_rest():
    q = random_head_pruning_qubo(8, 3, seed=4)
    pen = q.with_cardinality_penalty(q.default_penalty())
    states = index_to_bits(np.arange(2**8), 8)
    feasible = states.sum(1) == 3
    e, ep = q.energy(states), pen.energy(states)
    np.testing.assert_allclose(ep[feasible], e[feasible], atol=1e-12)
    assert ep[~feasible].min() > ep[feasible].max()


def test_dict_round_trip_preserves_problem():
    q = _random_qubo(5, seed=2, k=2)
    back = QUBO.from_dict(q.to_dict())
    np.testing.assert_allclose(back.all_energies(), q.all_energies())
    assert back.hamming_weight == 2


def test_bad_shapes_and_weights_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        QUBO(np.zeros(3), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="hamming_weight"):
        QUBO(np.zeros(3), np.zeros((3, 3)), hamming_weight=4)


def test_popcounts():
    np.testing.assert_array_equal(popcounts(4), [bin(i).count("1") for i in range(16)])
