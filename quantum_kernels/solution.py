"""What every solver returns, and the honest quality measures used to compare them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantum_kernels.qubo import QUBO, bits_to_string


@dataclass
class Solution:
    """One solver's answer to one QUBO."""

    solver: str
    """``exact``, ``sa``, ``greedy``, ``qaoa`` or ``random``."""
    x: np.ndarray
    """The best assignment found (shape (n,), 0/1)."""
    energy: float
    """Its energy under the original (constrained) QUBO."""
    feasible: bool
    """Whether it satisfies the Hamming-weight constraint."""
    seconds: float
    """Wall time the solver took."""
    details: dict[str, Any] = field(default_factory=dict)
    """Solver-specific extras (sweeps, restarts, optimiser evaluations...)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "solver": self.solver,
            "x": [int(b) for b in self.x],
            "bitstring": bits_to_string(self.x),
            "energy": self.energy,
            "feasible": self.feasible,
            "seconds": self.seconds,
            **({"details": self.details} if self.details else {}),
        }


@dataclass
class Landscape:
    """Exact facts about a problem's feasible set, from a full enumeration."""

    optimum: float
    """The lowest feasible energy."""
    worst: float
    """The highest feasible energy."""
    mean: float
    """The mean feasible energy (what uniform feasible sampling gets on average)."""
    num_feasible: int
    """Number of feasible states."""
    num_optimal: int
    """Number of feasible states at the optimum (within 1e-9)."""

    @property
    def uniform_p_optimum(self) -> float:
        """P(optimum) of uniform sampling over feasible states."""
        return self.num_optimal / self.num_feasible

    @property
    def uniform_ratio(self) -> float:
        """Expected feasible-normalised ratio of uniform feasible sampling."""
        return self.ratio(self.mean)

    def ratio(self, energy: float) -> float:
        """Feasible-normalised ratio: 1 at the optimum, 0 at the worst feasible state."""
        span = self.worst - self.optimum
        return 1.0 if span <= 0 else float((self.worst - energy) / span)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "optimum": self.optimum,
            "worst": self.worst,
            "mean": self.mean,
            "num_feasible": self.num_feasible,
            "num_optimal": self.num_optimal,
            "uniform_p_optimum": self.uniform_p_optimum,
            "uniform_ratio": self.uniform_ratio,
        }


def distribution_quality(qubo: QUBO, landscape: Landscape, states: np.ndarray,
                         probabilities: np.ndarray) -> dict[str, float]:
    """P(optimum), P(feasible) and the expected feasible-normalised ratio of a distribution over states.

    ``states`` are bit rows (m, n) and ``probabilities`` their weights (summing to 1). Infeasible states
    count as ratio 0 (no better than the worst feasible answer), so a penalty that merely teaches the
    constraint earns nothing; best-of-shots is deliberately not reported.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    probs = probs / probs.sum()
    energies = np.asarray(qubo.energy(states))
    feasible = np.asarray(qubo.is_feasible(states))
    optimal = feasible & (energies <= landscape.optimum + 1e-9)
    span = max(landscape.worst - landscape.optimum, 1e-300)
    ratios = np.where(feasible, (landscape.worst - energies) / span, 0.0)
    p_opt = float(probs[optimal].sum())
    return {
        "p_optimum": p_opt,
        "p_feasible": float(probs[feasible].sum()),
        "ratio": float((probs * ratios).sum()),
        "p_optimum_vs_uniform": p_opt / landscape.uniform_p_optimum,
    }
