"""Simulated annealing, vectorised over independent chains; swap moves keep every group's number of ones."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from quantum_kernels.qubo import QUBO
from quantum_kernels.solution import Solution


@dataclass
class AnnealConfig:
    """Simulated-annealing schedule."""

    sweeps: int = 400
    """Sweeps per chain; one sweep is n proposed moves."""
    chains: int = 32
    """Independent chains run side by side (numpy-vectorised)."""
    t_start: float = 1.0
    """Initial temperature, relative to the problem's largest coefficient."""
    t_end: float = 0.005
    """Final temperature (geometric schedule), relative to the largest coefficient."""
    seed: int = 0
    """Random seed."""

    def __post_init__(self) -> None:
        if self.sweeps < 1 or self.chains < 1:
            raise ValueError("sweeps and chains must be >= 1")
        if not 0 < self.t_end <= self.t_start:
            raise ValueError("need 0 < t_end <= t_start")


def simulated_annealing(qubo: QUBO, config: AnnealConfig | None = None) -> Solution:
    """Anneal; with cardinality constraints, start from random feasible states and only swap a 1 with a 0
    inside one group (so every chain keeps every group's count at every step)."""
    cfg = config or AnnealConfig()
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    n, r = qubo.num_variables, cfg.chains
    constraints = qubo.constraints
    coupling = qubo.symmetric
    scale = qubo.scale()
    steps = cfg.sweeps * n
    temps = scale * np.geomspace(cfg.t_start, cfg.t_end, steps)
    rows = np.arange(r)

    x = np.zeros((r, n))
    if not constraints:
        x[:] = rng.integers(0, 2, size=(r, n))
    else:
        # ones[c, g, :k_g] and zeros[c, g, :n_g - k_g]: chain c's on and off variables of group g (padded).
        sizes = np.array([len(v) for v, _ in constraints])
        keeps = np.array([k for _, k in constraints])
        ones = np.zeros((r, len(constraints), max(1, keeps.max())), dtype=np.int64)
        zeros = np.zeros((r, len(constraints), max(1, (sizes - keeps).max())), dtype=np.int64)
        for g, (variables, k) in enumerate(constraints):
            order = variables[np.argsort(rng.random((r, len(variables))), axis=1)]
            ones[:, g, :k], zeros[:, g, :len(variables) - k] = order[:, :k], order[:, k:]
            np.put_along_axis(x, order[:, :k], 1.0, axis=1)
        moves = keeps * (sizes - keeps)
        swappable = np.flatnonzero(moves > 0)
        # Groups in proportion to their swap moves: every (group, 1, 0) swap is proposed equally often.
        group_p = moves[swappable] / moves[swappable].sum() if len(swappable) else None
    # fields[c, i] = h_i + sum_j J_ij x_j: the energy change of turning x_i on (with x_i excluded).
    fields = qubo.linear + x @ coupling
    energy = np.asarray(qubo.energy(x))
    best_x, best_e = x.copy(), energy.copy()

    for step in range(steps):
        if not constraints:
            i = rng.integers(0, n, size=r)
            delta = (1 - 2 * x[rows, i]) * fields[rows, i]
            accept = (delta <= 0) | (rng.random(r) < np.exp(-np.maximum(delta, 0) / temps[step]))
            sign = np.where(accept, 1 - 2 * x[rows, i], 0.0)
            x[rows, i] += sign
            fields += sign[:, None] * coupling[i]
        elif len(swappable):
            g = rng.choice(swappable, size=r, p=group_p)
            a = (rng.random(r) * keeps[g]).astype(np.int64)
            b = (rng.random(r) * (sizes[g] - keeps[g])).astype(np.int64)
            i, j = ones[rows, g, a], zeros[rows, g, b]
            delta = fields[rows, j] - fields[rows, i] - coupling[i, j]
            accept = (delta <= 0) | (rng.random(r) < np.exp(-np.maximum(delta, 0) / temps[step]))
            w = accept.astype(np.float64)
            x[rows, i] -= w
            x[rows, j] += w
            fields += w[:, None] * (coupling[j] - coupling[i])
            ones[rows, g, a] = np.where(accept, j, i)
            zeros[rows, g, b] = np.where(accept, i, j)
        else:
            break
        energy = energy + np.where(accept, delta, 0.0)
        better = energy < best_e - 1e-12
        if better.any():
            best_e[better] = energy[better]
            best_x[better] = x[better]

    c = int(np.argmin(best_e))
    x_best = best_x[c].round().astype(np.int8)
    seconds = time.perf_counter() - start
    return Solution("sa", x_best, float(qubo.energy(x_best)), bool(qubo.is_feasible(x_best)), seconds,
                    {"config": asdict(cfg), "chain_best_energies_spread": float(best_e.max() - best_e.min())})
