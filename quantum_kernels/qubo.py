"""The QUBO type: minimise ``offset + sum_i h_i x_i + sum_{i<j} J_ij x_i x_j`` over ``x`` in {0, 1}^n.

Bit convention everywhere in this package: variable ``i`` is qubit ``i`` and bit ``i`` of a basis-state index
(Qiskit's little-endian order). Bitstrings we print are written in *variable order* (``x0`` first), which is
the reverse of Qiskit's count keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from math import comb, prod

import numpy as np

Constraint = tuple[np.ndarray, int]
"""``(variables, k)``: exactly ``k`` of these variables are 1."""


@dataclass
class QUBO:
    """A quadratic unconstrained binary optimisation problem, optionally with a fixed number of ones."""

    linear: np.ndarray
    """Shape (n,): the coefficient of each ``x_i``."""
    quadratic: np.ndarray
    """Shape (n, n), strictly upper-triangular: ``quadratic[i, j]`` (i < j) multiplies ``x_i x_j``."""
    offset: float = 0.0
    """A constant added to every energy."""
    hamming_weight: int | None = None
    """If set, only states with exactly this many ones are feasible (``keep K heads``)."""
    names: list[str] = field(default_factory=list)
    """Optional variable names (for example ``L2.H3``), for reports."""
    groups: list[tuple[list[int], int]] | None = None
    """One cardinality constraint per group instead of ``hamming_weight``: each ``(variables, k)`` keeps
    exactly k of its variables on (``keep k heads of each layer``). The groups partition the variables."""

    def __post_init__(self) -> None:
        self.linear = np.asarray(self.linear, dtype=np.float64).reshape(-1)
        n = self.linear.shape[0]
        q = np.asarray(self.quadratic, dtype=np.float64)
        if q.shape != (n, n):
            raise ValueError(f"quadratic must have shape ({n}, {n}), got {q.shape}")
        # Fold any lower-triangular or diagonal entries into the canonical form (x_i^2 = x_i).
        self.quadratic = np.triu(q, 1) + np.tril(q, -1).T
        self.linear = self.linear + np.diag(q)
        self.offset = float(self.offset)
        if self.hamming_weight is not None and not 0 <= self.hamming_weight <= n:
            raise ValueError(f"hamming_weight must be in [0, {n}], got {self.hamming_weight}")
        if self.names and len(self.names) != n:
            raise ValueError(f"{len(self.names)} names for {n} variables")
        if self.groups is not None:
            if self.hamming_weight is not None:
                raise ValueError("give either hamming_weight or groups, not both")
            self.groups = [([int(v) for v in variables], int(k)) for variables, k in self.groups]
            covered = sorted(v for variables, _ in self.groups for v in variables)
            if covered != list(range(n)):
                raise ValueError(f"groups must partition the {n} variables (each variable in exactly one group)")
            for variables, k in self.groups:
                if not 0 <= k <= len(variables):
                    raise ValueError(f"a group of {len(variables)} variables cannot keep {k}")

    @property
    def constraints(self) -> list[Constraint]:
        """The cardinality constraints as ``(variables, k)``: the groups, the one Hamming weight, or none."""
        if self.groups is not None:
            return [(np.array(variables, dtype=np.int64), k) for variables, k in self.groups]
        if self.hamming_weight is not None:
            return [(np.arange(self.num_variables, dtype=np.int64), self.hamming_weight)]
        return []

    @property
    def constrained(self) -> bool:
        """Whether some cardinality constraint restricts the feasible set."""
        return self.groups is not None or self.hamming_weight is not None

    @property
    def num_variables(self) -> int:
        """Number of binary variables ``n``."""
        return int(self.linear.shape[0])

    @property
    def symmetric(self) -> np.ndarray:
        """``J + J^T`` with a zero diagonal: the coupling matrix used for local fields."""
        return self.quadratic + self.quadratic.T

    def energy(self, x: np.ndarray) -> np.ndarray | float:
        """Energy of one assignment (shape (n,)) or a batch (shape (m, n))."""
        xs = np.asarray(x, dtype=np.float64)
        single = xs.ndim == 1
        xs = np.atleast_2d(xs)
        e = self.offset + xs @ self.linear + ((xs @ self.quadratic) * xs).sum(axis=1)
        return float(e[0]) if single else e

    def energies_of(self, indices: np.ndarray, chunk: int = 1 << 17) -> np.ndarray:
        """Energies of basis-state integers (bit i = variable i), evaluated in chunks."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty(len(indices), dtype=np.float64)
        for start in range(0, len(indices), chunk):
            bits = index_to_bits(indices[start:start + chunk], self.num_variables)
            out[start:start + chunk] = self.energy(bits) if len(bits) else []
        return out

    def is_feasible(self, x: np.ndarray) -> np.ndarray | bool:
        """Whether assignments satisfy every cardinality constraint (always true without one)."""
        xs = np.asarray(x)
        ok = np.ones(xs.shape[:-1], dtype=bool)
        for variables, k in self.constraints:
            ok &= xs[..., variables].sum(axis=-1) == k
        return bool(ok) if xs.ndim == 1 else ok

    def num_feasible(self) -> int:
        """How many assignments are feasible: the product of ``C(n_g, k_g)``, or ``2^n`` unconstrained."""
        if not self.constrained:
            return 2**self.num_variables
        return prod(comb(len(variables), k) for variables, k in self.constraints)

    def without_constraints(self) -> QUBO:
        """The same energy with no cardinality constraint (what a fixed-weight circuit evolves)."""
        return QUBO(self.linear, self.quadratic, self.offset, None, list(self.names))

    def with_cardinality_penalty(self, strength: float) -> QUBO:
        """The unconstrained QUBO ``E(x) + strength * sum_g (sum_{i in g} x_i - k_g)^2`` (penalty form)."""
        if not self.constrained:
            raise ValueError("no cardinality constraint to turn into a penalty")
        n = self.num_variables
        linear, quadratic, offset = self.linear.copy(), self.quadratic.copy(), self.offset
        for variables, k in self.constraints:
            # (sum x - K)^2 = sum x_i (1 - 2K) + 2 sum_{i<j} x_i x_j + K^2
            linear[variables] += strength * (1 - 2 * k)
            block = np.zeros((n, n))
            block[np.ix_(variables, variables)] = 1.0
            quadratic += strength * 2 * np.triu(block, 1)
            offset += strength * k * k
        return QUBO(linear, quadratic, offset, None, list(self.names))

    def default_penalty(self) -> float:
        """A penalty strength that makes every infeasible state worse than every feasible one."""
        return float(np.abs(self.linear).sum() + np.abs(self.quadratic).sum() + 1.0)

    def scale(self) -> float:
        """The largest coefficient magnitude (used to normalise QAOA angles)."""
        peak = max(np.abs(self.linear).max(initial=0.0), np.abs(self.quadratic).max(initial=0.0))
        return float(peak) if peak > 0 else 1.0

    def to_ising(self):
        """The Ising ``SparsePauliOp`` whose diagonal equals this QUBO's energy (``x_i = (1 - Z_i) / 2``).

        The constraint is not encoded; use :meth:`with_cardinality_penalty` first for the penalty form.
        """
        from qiskit.quantum_info import SparsePauliOp

        n = self.num_variables
        terms: list[tuple[str, list[int], float]] = []
        const = self.offset + 0.5 * self.linear.sum()
        z = -0.5 * self.linear.copy()
        rows, cols = np.nonzero(self.quadratic)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            w = self.quadratic[i, j]
            # x_i x_j = (1 - Z_i - Z_j + Z_i Z_j) / 4
            const += w / 4
            z[i] -= w / 4
            z[j] -= w / 4
            terms.append(("ZZ", [i, j], w / 4))
        terms = [("Z", [i], float(z[i])) for i in range(n) if z[i] != 0.0] + terms
        terms.append(("", [], float(const)))
        return SparsePauliOp.from_sparse_list(terms, num_qubits=n).simplify(atol=1e-12)

    def all_energies(self, dtype: type = np.float64) -> np.ndarray:
        """The energy of every basis state, indexed by the state's integer (bit i = variable i).

        Built by doubling: energies of the first m variables extend to m + 1 in one vectorised step, so
        the cost is O(2^n) memory and time (n = 24 is 16.7 M entries).
        """
        n = self.num_variables
        energies = np.full(1, self.offset, dtype=dtype)
        for m in range(n):
            # Adding variable m: E(x, 1) = E(x, 0) + h_m + sum_{i<m} J_im x_i.
            field_m = self.linear[m] + self._low_bits_dot(m, self.quadratic[:m, m], dtype)
            energies = np.concatenate([energies, energies + field_m])
        return energies

    @staticmethod
    def _low_bits_dot(m: int, weights: np.ndarray, dtype: type) -> np.ndarray:
        """``sum_i weights[i] * bit_i(x)`` for every x in [0, 2^m)."""
        out = np.zeros(1, dtype=dtype)
        for i in range(m):
            out = np.concatenate([out, out + weights[i]])
        return out

    def to_dict(self) -> dict:
        """JSON-ready form (the ``QUBOProblem`` schema of the API)."""
        rows, cols = np.nonzero(self.quadratic)
        return {
            "num_variables": self.num_variables,
            "linear": self.linear.tolist(),
            "quadratic": [[int(i), int(j), float(self.quadratic[i, j])] for i, j in zip(rows, cols, strict=True)],
            "offset": self.offset,
            "hamming_weight": self.hamming_weight,
            "names": list(self.names) or None,
            **({"groups": [{"variables": list(v), "keep": k} for v, k in self.groups]}
               if self.groups is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> QUBO:
        """Build from the JSON form written by :meth:`to_dict` (already validated by the schema)."""
        n = int(data["num_variables"])
        linear = np.zeros(n)
        linear[: len(data.get("linear") or [])] = data.get("linear") or []
        quadratic = np.zeros((n, n))
        for i, j, w in data.get("quadratic") or []:
            a, b = (int(i), int(j)) if i < j else (int(j), int(i))
            if a == b:
                linear[a] += w
            else:
                quadratic[a, b] += w
        groups = data.get("groups")
        if groups is not None:
            groups = [(list(g["variables"]), int(g["keep"])) for g in groups]
        return cls(linear, quadratic, float(data.get("offset") or 0.0), data.get("hamming_weight"),
                   list(data.get("names") or []), groups)


def random_head_pruning_qubo(n: int, keep: int, seed: int = 0, redundancy_weight: float = 0.5) -> QUBO:
    """A random problem shaped like head pruning: reward important heads, penalise redundant pairs.

    Importances are log-normal (a few heads matter a lot), redundancies are |correlations| in [0, 1).
    """
    rng = np.random.default_rng(seed)
    importance = rng.lognormal(0.0, 0.75, size=n)
    importance /= importance.max()
    corr = np.abs(rng.normal(0.0, 0.35, size=(n, n))).clip(max=0.99)
    return QUBO(-importance, redundancy_weight * np.triu(corr, 1), 0.0, keep)


def index_to_bits(indices: np.ndarray, n: int) -> np.ndarray:
    """Basis-state integers to bit rows (shape (m, n), column i = variable i)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1, 1)
    return ((idx >> np.arange(n, dtype=np.int64)) & 1).astype(np.int8)


def bits_to_string(bits: np.ndarray) -> str:
    """Bits in variable order as a string, ``x0`` first."""
    return "".join(str(int(b)) for b in bits)


def popcounts(n: int) -> np.ndarray:
    """The number of ones of every integer in [0, 2^n), as uint8."""
    counts = np.zeros(1, dtype=np.uint8)
    for _ in range(n):
        counts = np.concatenate([counts, counts + 1])
    return counts


def feasible_basis(constraints: list[Constraint], num_variables: int) -> np.ndarray:
    """Every basis-state integer meeting all constraints (which partition the variables), sorted.

    The feasible set is the product of each group's size-k subsets, so it is built as that product
    (sum of disjoint bit masks) without touching the 2^n states outside it.
    """
    if num_variables > 62:
        raise ValueError("at most 62 variables fit a basis-state integer")
    states = np.zeros(1, dtype=np.int64)
    for variables, k in constraints:
        masks = np.array([sum(1 << int(v) for v in chosen) for chosen in combinations(variables.tolist(), k)],
                         dtype=np.int64)
        states = np.add.outer(states, masks).reshape(-1)
    return np.sort(states)
