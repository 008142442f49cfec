"""Initial states and mixers for the two constraint formulations, as Qiskit objects.

* ``penalty``: ``|+>^n`` start, transverse-field mixer ``sum_i X_i`` (Qiskit's default).
* ``fixed_weight``: Dicke state ``|D^n_K>`` (equal superposition of all size-K states) and the XY ring
  mixer ``sum_{(i,j) in ring} (X_i X_j + Y_i Y_j) / 2``, which conserves the number of ones, so the
  state never leaves the feasible subspace and no penalty is needed.

The ring's pairs are applied in parity order (even pairs, odd pairs, then the wrap-around pair when n is
odd); ``statevector.py`` applies exactly the same product so that its states match the circuits.

With one cardinality constraint per group of variables (``keep k heads of each layer``) the start is the
product of the groups' Dicke states and the mixer is one XY ring inside each group (groups in order), so
every group's number of ones is conserved.
"""

from __future__ import annotations

import numpy as np


def ring_pairs(n: int) -> list[tuple[int, int]]:
    """The XY mixer's qubit pairs in application order (parity layers of the ring)."""
    if n < 2:
        return []
    if n == 2:
        return [(0, 1)]
    even = [(i, i + 1) for i in range(0, n - 1, 2)]
    odd = [(i, i + 1) for i in range(1, n - 1, 2)]
    wrap = [(n - 1, 0)]
    return even + odd + wrap


def constraint_pairs(constraints: list[tuple[np.ndarray, int]]) -> list[tuple[int, int]]:
    """The grouped XY mixer's qubit pairs in application order: each group's ring, group after group."""
    pairs = []
    for variables, _ in constraints:
        pairs += [(int(variables[i]), int(variables[j])) for i, j in ring_pairs(len(variables))]
    return pairs


def grouped_xy_mixer(n: int, constraints: list[tuple[np.ndarray, int]]):
    """``sum_groups sum_ring(group) (XX + YY) / 2`` with terms in :func:`constraint_pairs` order."""
    from qiskit.quantum_info import SparsePauliOp

    terms = []
    for i, j in constraint_pairs(constraints):
        terms += [("XX", [i, j], 0.5), ("YY", [i, j], 0.5)]
    return SparsePauliOp.from_sparse_list(terms, num_qubits=n)


def grouped_dicke_circuit(n: int, constraints: list[tuple[np.ndarray, int]]):
    """The product of the groups' Dicke states ``|D^{n_g}_{k_g}>`` on their own qubits."""
    from qiskit.circuit import QuantumCircuit

    qc = QuantumCircuit(n, name="Dicke product")
    for variables, k in constraints:
        qc.compose(dicke_state_circuit(len(variables), k), qubits=[int(v) for v in variables], inplace=True)
    return qc


def xy_ring_mixer(n: int):
    """``sum (XX + YY) / 2`` over the ring as a ``SparsePauliOp`` whose term order is :func:`ring_pairs`.

    ``qaoa_ansatz`` exponentiates it term by term in that order, so exp(-i b (XX+YY)/2) per pair (XX and YY
    on one pair commute, so this is exact per pair).
    """
    from qiskit.quantum_info import SparsePauliOp

    terms = []
    for i, j in ring_pairs(n):
        terms += [("XX", [i, j], 0.5), ("YY", [i, j], 0.5)]
    return SparsePauliOp.from_sparse_list(terms, num_qubits=n)


def x_mixer(n: int):
    """The transverse-field mixer ``sum_i X_i``."""
    from qiskit.quantum_info import SparsePauliOp

    return SparsePauliOp.from_sparse_list([("X", [i], 1.0) for i in range(n)], num_qubits=n)


def dicke_state_circuit(n: int, k: int):
    """Deterministic preparation of ``|D^n_k>`` with O(nk) gates (Bärtschi & Eidenbenz, 2019).

    Start from k ones on the last qubits, then apply the split-and-cyclic-shift blocks SCS_{m, min(k, m-1)}
    for m = n down to 2. Paper qubit q (1-based) is Qiskit qubit q - 1; the state is symmetric, so this
    labelling does not matter for the result.
    """
    from qiskit.circuit import QuantumCircuit
    from qiskit.circuit.library import RYGate

    qc = QuantumCircuit(n, name=f"Dicke({n},{k})")
    if k == 0:
        return qc
    for q in range(n - k, n):
        qc.x(q)
    if k == n:
        return qc

    def scs(m: int, l_max: int) -> None:
        # Paper qubits are 1-based: p(q) -> q - 1.
        top = m - 1
        # Block (i): two-qubit rotation on (m-1, m).
        theta = 2 * np.arccos(np.sqrt(1 / m))
        qc.cx(top - 1, top)
        qc.cry(theta, top, top - 1)
        qc.cx(top - 1, top)
        # Blocks (ii)_l: three-qubit rotations on (m-l, m-l+1, m).
        for ell in range(2, l_max + 1):
            theta = 2 * np.arccos(np.sqrt(ell / m))
            target, mid = top - ell, top - ell + 1
            qc.cx(target, top)
            qc.append(RYGate(theta).control(2, annotated=True), [top, mid, target])
            qc.cx(target, top)

    for m in range(n, 1, -1):
        scs(m, min(k, m - 1))
    return qc


def dicke_vector(n: int, k: int) -> np.ndarray:
    """``|D^n_k>`` as a dense complex64 vector (bit i of the index = qubit i)."""
    from quantum_kernels.qubo import popcounts

    mask = popcounts(n) == k
    vec = np.zeros(2**n, dtype=np.complex64)
    vec[mask] = 1.0 / np.sqrt(mask.sum())
    return vec
