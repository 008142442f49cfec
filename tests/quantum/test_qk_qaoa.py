"""QAOA: the fixed-weight formulation beats uniform sampling; the primitives path agrees with the kernel."""

from __future__ import annotations

import numpy as np
import pytest

from quantum_kernels.exact import solve_exact
from quantum_kernels.qaoa import QAOAConfig, QAOASolver
from quantum_kernels.qubo import random_head_pruning_qubo
from quantum_kernels.statevector import QAOAKernel


def test_fixed_weight_qaoa_beats_uniform_feasible_sampling():
    q = random_head_pruning_qubo(8, 4, seed=8)
    _, land = solve_exact(q)
    result = QAOASolver(QAOAConfig(reps=2, maxiter=80)).solve(q, land)
    exact = result.quality["exact"]
    assert exact["p_feasible"] == pytest.approx(1.0)
    assert exact["p_optimum"] > 5 * land.uniform_p_optimum
    assert exact["ratio"] > land.uniform_ratio
    assert result.solution.feasible and sum(result.counts.values()) == 4096
    assert set(result.angles) == {1, 2}


def test_penalty_formulation_leaks_infeasible_states():
    q = random_head_pruning_qubo(8, 4, seed=8)
    _, land = solve_exact(q)
    result = QAOASolver(QAOAConfig(reps=1, formulation="penalty", maxiter=60)).solve(q, land)
    assert result.quality["exact"]["p_feasible"] < 1.0
    # Infeasible shots count as ratio 0, so the ratio is at most P(feasible).
    assert result.quality["exact"]["ratio"] <= result.quality["exact"]["p_feasible"] + 1e-9


@pytest.mark.parametrize("formulation", ["fixed_weight", "penalty"])
def test_aer_primitives_agree_with_the_kernel(formulation):
    q = random_head_pruning_qubo(5, 2, seed=2)
    solver = QAOASolver(QAOAConfig(reps=1, formulation=formulation, maxiter=15, shots=2000),
                        backend=_aer())
    result = solver.solve(q)
    assert result.engine == "aer_simulator"
    assert result.circuit["two_qubit_gates"] > 0
    cost, fixed = solver.cost_qubo(q)
    kernel = QAOAKernel(cost.all_energies(), 5, "xy" if fixed else "x", q.hamming_weight)
    angles = result.angles[1]
    expected = kernel.expectation(np.array(angles["gammas"]) / cost.scale(), np.array(angles["betas"]))
    assert result.expected_energy == pytest.approx(expected, abs=1e-6)
    assert sum(result.counts.values()) == 2000


def test_any_v2_sampler_and_estimator_plug_in():
    from qiskit.primitives import StatevectorEstimator, StatevectorSampler

    q = random_head_pruning_qubo(4, 2, seed=1)
    result = QAOASolver(QAOAConfig(reps=1, maxiter=10, shots=500), sampler=StatevectorSampler(seed=3),
                        estimator=StatevectorEstimator()).solve(q)
    assert all(bin(s).count("1") == 2 for s in result.counts)
    assert sum(result.counts.values()) == 500


def _aer():
    from qiskit_aer import AerSimulator

    return AerSimulator(seed_simulator=1)
