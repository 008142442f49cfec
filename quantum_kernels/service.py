"""One QAOA job end to end (shared by the CLI and the HTTP route): validate size, solve, compare."""

from __future__ import annotations

import time

import numpy as np

from quantum_kernels.anneal import simulated_annealing
from quantum_kernels.exact import solve_exact
from quantum_kernels.greedy import greedy
from quantum_kernels.qubo import QUBO, bits_to_string, index_to_bits
from quantum_kernels.schema import QAOARequest, QAOAResponse, SampleOut, SolutionOut
from quantum_kernels.solution import Solution

EXACT_LANDSCAPE_MAX = 22
"""Up to this many variables the optimum is enumerated so that P(optimum) and the ratio can be reported."""


INSTALL_HINT = "install the quantum extra: pip install 'nexus-k[quantum]' (make install does)"


class QuantumUnavailable(RuntimeError):
    """The optional quantum dependencies (numba, qiskit, qiskit-aer) are not installed here."""


def _qaoa_module():
    """``quantum_kernels.qaoa``, imported on first use so that importing this module (and the server's
    route) needs none of the quantum extra."""
    try:
        from quantum_kernels import qaoa
    except ImportError as err:
        raise QuantumUnavailable(f"QAOA is not available on this server ({err.name} is missing); "
                                 f"{INSTALL_HINT}") from err
    return qaoa


class ProblemTooLarge(ValueError):
    """The problem exceeds a size limit; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def check_limits(request: QAOARequest, max_variables: int) -> None:
    """Reject problems a simulator cannot run within the limits (the statevector is 2^n)."""
    n = request.problem.num_variables
    if n > max_variables:
        raise ProblemTooLarge(f"num_variables {n} exceeds this service's limit of {max_variables} "
                              f"for simulated QAOA", "problem.num_variables")


def run_classical(problem: QUBO, solver: str, seed: int = 0) -> Solution:
    """Run ``exact``, ``sa`` or ``greedy`` on a problem."""
    if solver == "exact":
        return solve_exact(problem)[0]
    if solver == "sa":
        from quantum_kernels.anneal import AnnealConfig

        return simulated_annealing(problem, AnnealConfig(seed=seed))
    if solver == "greedy":
        return greedy(problem)
    raise ValueError(f"unknown classical solver {solver!r}")


def _solution_out(solution: Solution) -> SolutionOut:
    return SolutionOut(solver=solution.solver, bitstring=bits_to_string(solution.x),
                       x=[int(b) for b in solution.x], energy=solution.energy, feasible=solution.feasible,
                       seconds=solution.seconds)


def run_qaoa_request(request: QAOARequest, max_variables: int = 20, backend=None) -> QAOAResponse:
    """Solve one request with QAOA and the requested classical baseline; report honest quality measures."""
    check_limits(request, max_variables)
    problem = QUBO.from_dict(request.problem.model_dump())
    n = problem.num_variables
    timings: dict[str, float] = {}
    landscape = None
    if n <= EXACT_LANDSCAPE_MAX:
        t = time.perf_counter()
        _, landscape = solve_exact(problem)
        timings["exact"] = time.perf_counter() - t
    qaoa = _qaoa_module()
    config = qaoa.QAOAConfig(reps=request.reps, formulation=request.formulation, penalty=request.penalty,
                        shots=request.shots, maxiter=request.maxiter, seed=request.seed)
    result = qaoa.QAOASolver(config, backend=backend).solve(problem, landscape)
    baseline = run_classical(problem, request.baseline, request.seed)

    top = sorted(result.counts.items(), key=lambda kv: (-kv[1], kv[0]))[: request.top_k]
    bits = index_to_bits(np.array([s for s, _ in top]), n)
    energies = np.atleast_1d(problem.energy(bits))
    feasible = np.atleast_1d(problem.is_feasible(bits))
    samples = [SampleOut(bitstring=bits_to_string(b), count=c, probability=c / request.shots, energy=float(e),
                         feasible=bool(f)) for b, (_, c), e, f in zip(bits, top, energies, feasible, strict=True)]
    quality = result.quality.get("exact") or result.quality.get("sampled") or {}
    sampled = result.quality.get("sampled", {})
    return QAOAResponse(
        backend=result.engine, num_variables=n, reps=request.reps, formulation=request.formulation,
        best=_solution_out(result.solution), samples=samples, expected_energy=result.expected_energy,
        optimum=landscape.optimum if landscape else None,
        p_optimum=quality.get("p_optimum"), p_optimum_sampled=sampled.get("p_optimum"),
        p_feasible=quality.get("p_feasible"), approximation_ratio=quality.get("ratio"),
        uniform_p_optimum=landscape.uniform_p_optimum if landscape else None,
        uniform_ratio=landscape.uniform_ratio if landscape else None,
        baseline=_solution_out(baseline),
        angles={str(p): a for p, a in result.angles.items()}, evaluations=result.evaluations,
        timings={**timings, **result.timings, "baseline": baseline.seconds},
    )
