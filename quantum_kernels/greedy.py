"""Greedy construction: add the variable that lowers the energy most until every budget is met (or nothing helps)."""

from __future__ import annotations

import time

import numpy as np

from quantum_kernels.qubo import QUBO
from quantum_kernels.solution import Solution


def greedy(qubo: QUBO) -> Solution:
    """Start from all zeros and switch on the best variable each step.

    With cardinality constraints it fills every group to exactly its k_g (choosing among groups that still
    have room, even if the best addition raises the energy); without, it stops when no single addition
    lowers the energy.
    """
    start = time.perf_counter()
    n = qubo.num_variables
    coupling = qubo.symmetric
    x = np.zeros(n, dtype=np.int8)
    fields = qubo.linear.copy()
    group_of = np.zeros(n, dtype=np.int64)
    constraints = qubo.constraints
    for g, (variables, _) in enumerate(constraints):
        group_of[variables] = g
    left = np.array([k for _, k in constraints], dtype=np.int64)
    target = n if not constraints else int(left.sum())
    for _ in range(target):
        if constraints:
            room = left[group_of] > 0
            candidates = np.where((x == 0) & room, fields, np.inf)
        else:
            candidates = np.where(x == 0, fields, np.inf)
        i = int(np.argmin(candidates))
        if not constraints and candidates[i] >= 0:
            break
        x[i] = 1
        fields += coupling[i]
        if constraints:
            left[group_of[i]] -= 1
    return Solution("greedy", x, float(qubo.energy(x)), bool(qubo.is_feasible(x)), time.perf_counter() - start)


def uniform_feasible_samples(qubo: QUBO, shots: int, seed: int = 0) -> np.ndarray:
    """Uniform random feasible states (random size-k_g subsets per group, or random bits unconstrained)."""
    rng = np.random.default_rng(seed)
    n = qubo.num_variables
    if not qubo.constrained:
        return rng.integers(0, 2, size=(shots, n)).astype(np.int8)
    x = np.zeros((shots, n), dtype=np.int8)
    for variables, k in qubo.constraints:
        order = variables[np.argsort(rng.random((shots, len(variables))), axis=1)[:, :k]]
        np.put_along_axis(x, order, 1, axis=1)
    return x
