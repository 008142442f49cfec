"""The fast kernel against Qiskit's Statevector on random QAOA circuits (to 1e-5 in complex64)."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit.circuit.library import qaoa_ansatz
from qiskit.quantum_info import Statevector

from quantum_kernels.mixers import dicke_state_circuit, dicke_vector, ring_pairs, xy_ring_mixer
from quantum_kernels.qaoa import _parameter_values, interpolate_angles
from quantum_kernels.qubo import QUBO
from quantum_kernels.statevector import QAOAKernel


@pytest.mark.parametrize("n", [2, 3, 5, 6])
def test_dicke_circuit_prepares_the_dicke_state(n):
    for k in range(n + 1):
        state = Statevector(dicke_state_circuit(n, k)).data
        np.testing.assert_allclose(state, dicke_vector(n, k), atol=1e-6)


def test_ring_pairs_cover_the_ring_once():
    for n in (3, 4, 7, 8):
        pairs = ring_pairs(n)
        assert sorted(tuple(sorted(p)) for p in pairs) == sorted(
            tuple(sorted((i, (i + 1) % n))) for i in range(n))


@pytest.mark.parametrize("mixer", ["x", "xy"])
@pytest.mark.parametrize("n", [3, 4, 7])
def test_kernel_matches_qiskit_statevector_on_random_circuits(mixer, n):
    rng = np.random.default_rng(100 * n + len(mixer))
    for trial in range(3):
        q = QUBO(rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1), rng.normal())
        k = int(rng.integers(1, n))
        scale = q.scale()
        reps = int(rng.integers(1, 4))
        gammas, betas = rng.uniform(-np.pi, np.pi, reps), rng.uniform(-np.pi, np.pi, reps)
        cost = q.to_ising() / scale
        if mixer == "x":
            circuit = qaoa_ansatz(cost, reps=reps)
        else:
            circuit = qaoa_ansatz(cost, reps=reps, initial_state=dicke_state_circuit(n, k),
                                  mixer_operator=xy_ring_mixer(n))
        bound = circuit.assign_parameters(_parameter_values(circuit, gammas, betas))
        reference = Statevector(bound).data
        for subspace in (True, False):
            ours = QAOAKernel(q.all_energies() / scale, n, mixer, k, subspace=subspace).full_state(gammas, betas)
            phase = np.vdot(ours, reference)
            phase /= abs(phase)  # the identity term is a global phase
            np.testing.assert_allclose(ours * phase, reference, atol=1e-5, err_msg=f"trial {trial}")


def test_kernel_probabilities_stay_in_the_feasible_subspace():
    n, k = 8, 3
    q = QUBO(np.linspace(-1, 1, n), np.zeros((n, n)))
    kernel = QAOAKernel(q.all_energies(), n, "xy", k)
    probs = kernel.probabilities(np.array([0.3, 0.7]), np.array([0.5, -0.2]))
    assert len(probs) == 56 and probs.sum() == pytest.approx(1.0)
    counts = kernel.sample(np.array([0.3]), np.array([0.5]), shots=300, seed=1)
    assert all(bin(s).count("1") == k for s in counts) and sum(counts.values()) == 300


def test_interpolation_grows_angles_by_one():
    grown = interpolate_angles(np.array([0.2, 0.6]))
    np.testing.assert_allclose(grown, [0.2, 0.4, 0.6])
