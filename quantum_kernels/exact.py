"""Exact search: vectorised brute force over all 2^n assignments, in blocks of 2^20 (n <= 26 or so)."""

from __future__ import annotations

import logging
import time

import numpy as np

from quantum_kernels.qubo import QUBO, feasible_basis, index_to_bits, popcounts
from quantum_kernels.solution import Landscape, Solution

log = logging.getLogger(__name__)

MAX_EXACT_VARIABLES = 30
"""Refuse beyond this: 2^30 energies take minutes even vectorised."""
BLOCK_BITS = 20
"""Low variables enumerated at once (2^20 float64 = 8 MB per block)."""
MAX_GROUPED_STATES = 1 << 24
"""With one constraint per group, exact search walks the feasible product set; refuse beyond this size."""


def _low_dot(m: int, weights: np.ndarray) -> np.ndarray:
    """``sum_i weights[i] * bit_i(x)`` for every x in [0, 2^m)."""
    out = np.zeros(1)
    for i in range(m):
        out = np.concatenate([out, out + weights[i]])
    return out


def enumerate_blocks(qubo: QUBO):
    """Yield ``(high_index, low_bits_count, energies, weights)`` for every block of the full enumeration.

    State index = ``high_index << low_bits_count | low``; ``energies[low]`` and ``weights[low]`` (popcount
    of the whole state) cover the block. The low part's quadratic energy is computed once; each block
    only adds its high part's energy and the coupling, which is linear in the low bits.
    """
    n = qubo.num_variables
    if n > MAX_EXACT_VARIABLES:
        raise ValueError(f"exact search supports at most {MAX_EXACT_VARIABLES} variables, got {n}")
    m = min(n, BLOCK_BITS)
    low = QUBO(qubo.linear[:m], qubo.quadratic[:m, :m], qubo.offset)
    low_energy = low.all_energies()
    low_weight = popcounts(m).astype(np.int16)
    high_q = qubo.quadratic[:m, m:]
    high = QUBO(qubo.linear[m:], qubo.quadratic[m:, m:], 0.0) if n > m else None
    for hi in range(2 ** (n - m)):
        if high is None:
            yield 0, m, low_energy, low_weight
            continue
        y = index_to_bits(np.array([hi]), n - m)[0].astype(np.float64)
        coupling = high_q @ y
        yield hi, m, low_energy + high.energy(y) + _low_dot(m, coupling), low_weight + int(y.sum())


def _solve_grouped(qubo: QUBO) -> tuple[Solution, Landscape]:
    """Exact search over the product of the groups' feasible subsets (never the 2^n states)."""
    start = time.perf_counter()
    size = qubo.num_feasible()
    if size > MAX_GROUPED_STATES:
        raise ValueError(f"exact search would enumerate {size:,} feasible states (max {MAX_GROUPED_STATES:,})")
    states = feasible_basis(qubo.constraints, qubo.num_variables)
    energies = qubo.energies_of(states)
    best = int(np.argmin(energies))
    best_e = float(energies[best])
    num_optimal = int((energies <= best_e + 1e-9).sum())
    x = index_to_bits(states[best:best + 1], qubo.num_variables)[0]
    seconds = time.perf_counter() - start
    solution = Solution("exact", x, best_e, True, seconds, {"states_enumerated": int(size)})
    return solution, Landscape(best_e, float(energies.max()), float(energies.mean()), int(size), num_optimal)


def solve_exact(qubo: QUBO) -> tuple[Solution, Landscape]:
    """The optimum (respecting the constraints) and the feasible landscape (worst, mean, counts)."""
    if qubo.groups is not None:
        return _solve_grouped(qubo)
    start = time.perf_counter()
    n = qubo.num_variables
    k = qubo.hamming_weight
    best_e, best_idx = np.inf, -1
    worst_e, total, count = -np.inf, 0.0, 0
    for hi, m, energies, weights in enumerate_blocks(qubo):
        e = energies if k is None else np.where(weights == k, energies, np.nan)
        if np.all(np.isnan(e)):
            continue
        i = int(np.nanargmin(e))
        if e[i] < best_e:
            best_e, best_idx = float(e[i]), (hi << m) | i
        worst_e = max(worst_e, float(np.nanmax(e)))
        feasible = ~np.isnan(e)
        total += float(e[feasible].sum())
        count += int(feasible.sum())
    # Second pass for ties at the optimum (cheap relative to the first).
    num_optimal = 0
    for _hi, _m, energies, weights in enumerate_blocks(qubo):
        ok = energies <= best_e + 1e-9
        if k is not None:
            ok &= weights == k
        num_optimal += int(ok.sum())
    x = index_to_bits(np.array([best_idx]), n)[0]
    seconds = time.perf_counter() - start
    log.debug("exact search over %d variables: %.3f s", n, seconds)
    solution = Solution("exact", x, best_e, True, seconds, {"states_enumerated": 2**n})
    return solution, Landscape(best_e, worst_e, total / count, count, num_optimal)
