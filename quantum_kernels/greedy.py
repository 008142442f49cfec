"""Greedy construction: add the variable that lowers the energy most, until K are on (or nothing helps)."""

from __future__ import annotations

import time

import numpy as np

from quantum_kernels.qubo import QUBO
from quantum_kernels.solution import Solution


def greedy(qubo: QUBO) -> Solution:
    """Start from all zeros and switch on the best variable each step.

    With ``hamming_weight`` K it adds exactly K variables (even if one raises the energy); without it, it
    stops when no single addition lowers the energy.
    """
    start = time.perf_counter()
    n, k = qubo.num_variables, qubo.hamming_weight
    coupling = qubo.symmetric
    x = np.zeros(n, dtype=np.int8)
    fields = qubo.linear.copy()
    target = n if k is None else k
    for _ in range(target):
        candidates = np.where(x == 0, fields, np.inf)
        i = int(np.argmin(candidates))
        if k is None and candidates[i] >= 0:
            break
        x[i] = 1
        fields += coupling[i]
    return Solution("greedy", x, float(qubo.energy(x)), bool(qubo.is_feasible(x)), time.perf_counter() - start)


def uniform_feasible_samples(qubo: QUBO, shots: int, seed: int = 0) -> np.ndarray:
    """Uniform random feasible states (random size-K subsets, or random bits without a constraint)."""
    rng = np.random.default_rng(seed)
    n, k = qubo.num_variables, qubo.hamming_weight
    if k is None:
        return rng.integers(0, 2, size=(shots, n)).astype(np.int8)
    order = np.argsort(rng.random((shots, n)), axis=1)[:, :k]
    x = np.zeros((shots, n), dtype=np.int8)
    np.put_along_axis(x, order, 1, axis=1)
    return x
