"""The JSON schema of QAOA-as-a-service: a QUBO in, samples and honest quality measures out.

Used by ``nexus-k quantum solve QUBO.json`` and ``POST /v1/quantum/qaoa``. Bitstrings are written in
variable order (``x0`` first); ``x`` lists the same bits as integers.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_VARIABLES = 26
"""Hard ceiling for any QUBO document (exact search and the kernel are O(2^n))."""
MAX_QUADRATIC_TERMS = 20_000
"""Upper bound on listed quadratic terms (duplicates are summed)."""

EXAMPLE_PROBLEM = {
    "num_variables": 4,
    "linear": [-1.0, -0.8, -0.6, -0.3],
    "quadratic": [[0, 1, 0.9], [0, 2, 0.1], [1, 3, 0.2], [2, 3, 0.4]],
    "offset": 0.0,
    "hamming_weight": 2,
    "names": ["L0.H0", "L0.H1", "L1.H0", "L1.H1"],
}


class CardinalityGroup(BaseModel):
    """Exactly ``keep`` of ``variables`` are 1 (for example: keep 2 of a layer's 4 heads)."""

    model_config = ConfigDict(extra="forbid")

    variables: list[int] = Field(min_length=1, description="Variable indices of the group.")
    keep: int = Field(ge=0, description="How many of them must be 1.")


class QUBOProblem(BaseModel):
    """Minimise ``offset + sum_i linear[i] x_i + sum_(i,j,w) w x_i x_j`` over x in {0,1}^n."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_PROBLEM]})

    num_variables: int = Field(ge=1, le=MAX_VARIABLES, description="Number of binary variables n.")
    linear: list[float] = Field(default_factory=list, description="Coefficient of each x_i (missing = 0).")
    quadratic: list[tuple[int, int, float]] = Field(
        default_factory=list, max_length=MAX_QUADRATIC_TERMS,
        description="Terms [i, j, w] adding w * x_i * x_j (i != j; i == j adds w * x_i).")
    offset: float = Field(0.0, description="Constant added to every energy.")
    hamming_weight: int | None = Field(
        None, ge=0, description="If set, exactly this many variables must be 1 (for example: keep K heads).")
    names: list[str] | None = Field(None, description="Optional variable names, one per variable.")
    groups: list[CardinalityGroup] | None = Field(
        None, description="One cardinality constraint per group instead of hamming_weight; the groups "
                          "partition the variables. QAOA starts in the product of the groups' Dicke states "
                          "and mixes inside each group.")

    @model_validator(mode="after")
    def _check(self) -> QUBOProblem:
        n = self.num_variables
        if len(self.linear) > n:
            raise ValueError(f"linear has {len(self.linear)} entries for {n} variables")
        for pos, (i, j, w) in enumerate(self.quadratic):
            if not (0 <= i < n and 0 <= j < n):
                raise ValueError(f"quadratic[{pos}] = [{i}, {j}, ...] indexes outside 0..{n - 1}")
            if not math.isfinite(w):
                raise ValueError(f"quadratic[{pos}] has a non-finite weight")
        if not all(math.isfinite(v) for v in [*self.linear, self.offset]):
            raise ValueError("linear and offset must be finite numbers")
        if self.hamming_weight is not None and self.hamming_weight > n:
            raise ValueError(f"hamming_weight {self.hamming_weight} exceeds num_variables {n}")
        if self.names is not None and len(self.names) != n:
            raise ValueError(f"names has {len(self.names)} entries for {n} variables")
        if self.groups is not None:
            if self.hamming_weight is not None:
                raise ValueError("give either hamming_weight or groups, not both")
            covered = sorted(v for g in self.groups for v in g.variables)
            if covered != list(range(n)):
                raise ValueError(f"groups must partition the variables 0..{n - 1} (each in exactly one group)")
            for pos, g in enumerate(self.groups):
                if g.keep > len(g.variables):
                    raise ValueError(f"groups[{pos}] keeps {g.keep} of {len(g.variables)} variables")
        return self


class QAOARequest(BaseModel):
    """A QAOA job: the problem, the circuit depth and formulation, and the sampling budget."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"problem": EXAMPLE_PROBLEM, "reps": 2, "shots": 1024}]})

    problem: QUBOProblem
    reps: int = Field(2, ge=1, le=5, description="QAOA depth p (angles are grown 1..p).")
    formulation: Literal["fixed_weight", "penalty"] = Field(
        "fixed_weight", description="How a hamming_weight is enforced: Dicke start + XY mixer, or a penalty.")
    penalty: float | None = Field(None, gt=0, description="Penalty strength (penalty formulation only).")
    shots: int = Field(2048, ge=1, le=100_000, description="Bitstrings sampled at the final angles.")
    maxiter: int = Field(100, ge=1, le=300, description="Optimiser iterations per depth.")
    seed: int = Field(0, ge=0, description="Random seed.")
    baseline: Literal["sa", "greedy", "exact"] = Field(
        "sa", description="Classical solver run on the same problem for comparison.")
    top_k: int = Field(10, ge=1, le=100, description="How many of the most frequent samples to return.")


class SampleOut(BaseModel):
    """One measured bitstring."""

    bitstring: str = Field(description="Bits in variable order, x0 first.")
    count: int = Field(description="Shots that returned it.")
    probability: float = Field(description="count / shots.")
    energy: float = Field(description="Its energy under the original QUBO.")
    feasible: bool = Field(description="Whether it meets hamming_weight.")


class SolutionOut(BaseModel):
    """A solver's answer."""

    solver: str
    bitstring: str
    x: list[int]
    energy: float
    feasible: bool
    seconds: float


class QAOAResponse(BaseModel):
    """QAOA's samples, its answer, and how it compares with the optimum, uniform sampling and a classical
    solver. ``p_optimum`` and ``approximation_ratio`` describe the whole output distribution (never the
    best of the shots)."""

    object: Literal["quantum.qaoa"] = "quantum.qaoa"
    backend: str = Field(description="What ran the circuit (statevector_kernel, aer_simulator, a QPU...).")
    num_variables: int
    reps: int
    formulation: str
    best: SolutionOut = Field(description="Lowest-energy feasible sample.")
    samples: list[SampleOut] = Field(description="The top_k most frequent samples.")
    expected_energy: float = Field(description="<H_C> at the final angles (penalty included if used).")
    optimum: float | None = Field(None, description="Exact optimum (feasible), when small enough to enumerate.")
    p_optimum: float | None = Field(None, description="Probability of sampling an optimum (exact if known).")
    p_optimum_sampled: float | None = Field(None, description="Fraction of shots that hit an optimum.")
    p_feasible: float | None = Field(None, description="Probability that a sample meets the constraint.")
    approximation_ratio: float | None = Field(
        None, description="Expected feasible-normalised ratio: 1 = optimum, 0 = worst feasible; "
                          "infeasible samples count 0.")
    uniform_p_optimum: float | None = Field(None, description="P(optimum) of uniform feasible sampling.")
    uniform_ratio: float | None = Field(None, description="Expected ratio of uniform feasible sampling.")
    baseline: SolutionOut = Field(description="The classical solver's answer on the same problem.")
    angles: dict[str, dict[str, list[float]]] = Field(description="Depth -> optimised gammas and betas.")
    evaluations: int = Field(description="Energy evaluations used by the optimiser.")
    timings: dict[str, float] = Field(description="Seconds per stage.")
