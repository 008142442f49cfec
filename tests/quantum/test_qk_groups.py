"""One cardinality constraint per group ("keep k heads of each layer"): the QUBO, the kernel against Qiskit's
Statevector on the Dicke-product + grouped-XY circuits, and every solver's respect for every budget."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from qiskit.circuit.library import qaoa_ansatz
from qiskit.quantum_info import Statevector

from quantum_kernels.anneal import AnnealConfig, simulated_annealing
from quantum_kernels.exact import solve_exact
from quantum_kernels.greedy import greedy, uniform_feasible_samples
from quantum_kernels.mixers import constraint_pairs, grouped_dicke_circuit, grouped_xy_mixer
from quantum_kernels.qaoa import QAOAConfig, QAOASolver, _parameter_values
from quantum_kernels.qubo import QUBO, feasible_basis, index_to_bits
from quantum_kernels.statevector import QAOAKernel

# Contiguous layers, and a scattered partition (the kernel must not assume adjacent qubits).
GROUPINGS = {
    "layers": [([0, 1, 2], 1), ([3, 4, 5, 6], 2)],
    "scattered": [([0, 4, 5], 2), ([1, 6], 1), ([2, 3], 1)],
}


def _random(groups, seed: int) -> QUBO:
    n = sum(len(v) for v, _ in groups)
    rng = np.random.default_rng(seed)
    return QUBO(rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1), rng.normal(), groups=groups)


def _brute(q: QUBO) -> tuple[float, int]:
    n = q.num_variables
    states = index_to_bits(np.arange(2**n), n)
    ok = np.asarray(q.is_feasible(states))
    return float(q.energy(states)[ok].min()), int(ok.sum())


@pytest.mark.parametrize("name", sorted(GROUPINGS))
def test_feasible_basis_is_exactly_the_states_meeting_every_budget(name):
    q = _random(GROUPINGS[name], 0)
    n = q.num_variables
    every = index_to_bits(np.arange(2**n), n)
    expected = np.flatnonzero(np.asarray(q.is_feasible(every)))
    np.testing.assert_array_equal(feasible_basis(q.constraints, n), expected)
    assert q.num_feasible() == len(expected)


def test_groups_must_partition_the_variables_and_fit_their_budget():
    with pytest.raises(ValueError, match="partition"):
        QUBO(np.zeros(3), np.zeros((3, 3)), groups=[([0, 1], 1)])
    with pytest.raises(ValueError, match="cannot keep 3"):
        QUBO(np.zeros(3), np.zeros((3, 3)), groups=[([0, 1], 3), ([2], 0)])
    with pytest.raises(ValueError, match="not both"):
        QUBO(np.zeros(2), np.zeros((2, 2)), hamming_weight=1, groups=[([0, 1], 1)])


def test_groups_survive_the_json_round_trip_and_the_penalty_form():
    q = _random(GROUPINGS["scattered"], 1)
    back = QUBO.from_dict(q.to_dict())
    assert back.groups == q.groups
    n = q.num_variables
    states = index_to_bits(np.arange(2**n), n)
    penalised = q.with_cardinality_penalty(q.default_penalty()).energy(states)
    ok = np.asarray(q.is_feasible(states))
    np.testing.assert_allclose(penalised[ok], q.energy(states)[ok], atol=1e-9)
    assert penalised[~ok].min() > penalised[ok].max()


@pytest.mark.parametrize("name", sorted(GROUPINGS))
def test_kernel_matches_qiskit_statevector_on_grouped_circuits(name):
    groups = GROUPINGS[name]
    rng = np.random.default_rng(len(name))
    for trial in range(3):
        q = _random(groups, 10 + trial)
        n, scale = q.num_variables, q.scale()
        reps = int(rng.integers(1, 4))
        gammas, betas = rng.uniform(-np.pi, np.pi, reps), rng.uniform(-np.pi, np.pi, reps)
        cost = q.without_constraints().to_ising() / scale
        circuit = qaoa_ansatz(cost, reps=reps, initial_state=grouped_dicke_circuit(n, q.constraints),
                              mixer_operator=grouped_xy_mixer(n, q.constraints))
        reference = Statevector(circuit.assign_parameters(_parameter_values(circuit, gammas, betas))).data
        # The circuit itself never leaves the feasible product space.
        outside = np.setdiff1d(np.arange(2**n), feasible_basis(q.constraints, n))
        assert np.abs(reference[outside]).max() < 1e-6
        for subspace in (True, False):
            kernel = QAOAKernel(q.all_energies() / scale, n, "xy", subspace=subspace, constraints=q.constraints)
            assert len(kernel.basis) == (q.num_feasible() if subspace else 2**n)
            ours = kernel.full_state(gammas, betas)
            phase = np.vdot(ours, reference)
            phase /= abs(phase)
            np.testing.assert_allclose(ours * phase, reference, atol=1e-5, err_msg=f"{name} trial {trial}")
        # Energies given as a function of the stored states give the same kernel.
        lazy = QAOAKernel(lambda basis, q=q, scale=scale: q.energies_of(basis) / scale, n, "xy",
                          constraints=q.constraints)
        np.testing.assert_allclose(lazy.state(gammas, betas), kernel.state(gammas, betas)[lazy.basis], atol=1e-6)


def test_grouped_mixer_pairs_stay_inside_their_group():
    q = _random(GROUPINGS["scattered"], 2)
    group_of = {v: g for g, (vs, _) in enumerate(q.groups) for v in vs}
    pairs = constraint_pairs(q.constraints)
    assert all(group_of[i] == group_of[j] for i, j in pairs)
    assert len(pairs) == 3 + 1 + 1  # a ring of 3, and one pair for each group of 2


@pytest.mark.parametrize("name", sorted(GROUPINGS))
def test_exact_annealing_and_greedy_honour_every_budget(name):
    for seed in range(4):
        q = _random(GROUPINGS[name], 20 + seed)
        optimum, count = _brute(q)
        best, land = solve_exact(q)
        assert best.feasible and best.energy == pytest.approx(optimum)
        assert land.num_feasible == count and land.optimum == pytest.approx(optimum)
        found = simulated_annealing(q, AnnealConfig(sweeps=100, chains=8, seed=seed))
        assert found.feasible and found.energy == pytest.approx(optimum)
        g = greedy(q)
        assert g.feasible and g.energy >= optimum - 1e-12


def test_hot_annealing_never_breaks_a_budget():
    groups = [(list(range(4 * layer, 4 * layer + 4)), 2) for layer in range(5)]
    q = _random(groups, 3)
    for seed in range(3):
        found = simulated_annealing(q, AnnealConfig(sweeps=3, chains=4, t_start=100, t_end=90, seed=seed))
        assert found.feasible
        assert [int(found.x[v].sum()) for v, _ in groups] == [2] * 5


def test_uniform_samples_and_qaoa_samples_are_all_feasible():
    q = _random(GROUPINGS["layers"], 4)
    xs = uniform_feasible_samples(q, 400, seed=1)
    assert np.asarray(q.is_feasible(xs)).all()
    np.testing.assert_allclose(xs[:, :3].mean(0), 1 / 3, atol=0.1)
    result = QAOASolver(QAOAConfig(reps=2, maxiter=30, shots=500)).solve(q, solve_exact(q)[1])
    states = index_to_bits(np.array(sorted(result.counts)), q.num_variables)
    assert np.asarray(q.is_feasible(states)).all() and result.solution.feasible
    assert result.quality["exact"]["p_feasible"] == pytest.approx(1.0)
    assert q.num_feasible() == comb(3, 1) * comb(4, 2)


def test_grouped_exact_refuses_a_product_too_large(monkeypatch):
    import quantum_kernels.exact as exact_module

    monkeypatch.setattr(exact_module, "MAX_GROUPED_STATES", 10)
    with pytest.raises(ValueError, match="feasible states"):
        solve_exact(_random(GROUPINGS["layers"], 5))


def test_a_grouped_request_runs_through_the_service_and_bad_groups_are_rejected():
    from pydantic import ValidationError

    from quantum_kernels.schema import QAOARequest
    from quantum_kernels.service import run_qaoa_request

    q = _random(GROUPINGS["layers"], 6)
    request = QAOARequest.model_validate({"problem": q.to_dict(), "reps": 1, "maxiter": 20, "shots": 300,
                                          "baseline": "exact"})
    response = run_qaoa_request(request)
    assert response.p_feasible == pytest.approx(1.0) and all(s.feasible for s in response.samples)
    assert response.baseline.energy == pytest.approx(_brute(q)[0])
    bad = q.to_dict()
    bad["groups"][0]["variables"] = [0, 1]
    with pytest.raises(ValidationError, match="partition"):
        QAOARequest.model_validate({"problem": bad})
