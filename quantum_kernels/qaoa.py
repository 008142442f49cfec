"""QAOA on Qiskit 2.x: ``qaoa_ansatz``, a preset pass manager, V2 primitives and a SciPy optimiser.

Angles are optimised on the expectation of the cost Hamiltonian (the fast :class:`QAOAKernel` by default on
simulators, or any ``BaseEstimatorV2`` on the transpiled circuit), grown from depth p to p + 1 by linear
interpolation (Zhou et al., PRX 10, 021067), then bitstrings are drawn with a ``SamplerV2`` (any backend's)
or from the kernel's exact distribution.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

from quantum_kernels.mixers import grouped_dicke_circuit, grouped_xy_mixer, x_mixer
from quantum_kernels.qubo import QUBO, index_to_bits
from quantum_kernels.solution import Landscape, Solution, distribution_quality
from quantum_kernels.statevector import QAOAKernel

log = logging.getLogger(__name__)

FORMULATIONS = ("fixed_weight", "penalty")
ENGINES = ("kernel", "primitives")


@dataclass
class QAOAConfig:
    """How to run QAOA."""

    reps: int = 3
    """Final circuit depth p (angles are grown 1, 2, ..., p)."""
    formulation: str = "fixed_weight"
    """``fixed_weight`` (Dicke start + XY ring mixer, no penalty) or ``penalty`` (|+> start, X mixer,
    ``penalty * (sum x - K)^2`` added). Problems without a Hamming weight always use the plain X mixer."""
    penalty: float | None = None
    """Penalty strength for ``penalty``; None = large enough that every infeasible state loses."""
    engine: str = "kernel"
    """``kernel`` (exact numba statevector, simulators only) or ``primitives`` (Estimator/SamplerV2)."""
    shots: int = 4096
    """Bitstrings sampled at the end."""
    maxiter: int = 150
    """Optimiser iterations per depth."""
    starts: int = 1
    """Optimiser starts per depth (best grid points at p = 1, perturbed interpolations after)."""
    optimizer: str = "COBYLA"
    """Any gradient-free ``scipy.optimize.minimize`` method."""
    optimization_level: int = 1
    """Preset pass manager level for the primitives engine."""
    seed: int = 0
    """Seed for sampling and simulators."""

    def __post_init__(self) -> None:
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"formulation must be one of {FORMULATIONS}, got {self.formulation!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if not 1 <= self.reps <= 10:
            raise ValueError("reps must be in [1, 10]")
        if self.shots < 1 or self.maxiter < 1 or self.starts < 1:
            raise ValueError("shots, maxiter and starts must be >= 1")


@dataclass
class QAOAResult:
    """What a QAOA run produced."""

    solution: Solution
    """The lowest-energy feasible sample (the answer; not a quality measure)."""
    counts: dict[int, int]
    """Basis-state integer (bit i = variable i) -> number of shots."""
    angles: dict[int, dict[str, list[float]]]
    """Depth p -> optimised ``gammas`` and ``betas`` (for the scaled cost)."""
    expected_energy: float
    """``<H_C>`` at the final angles, in the problem's own units (penalty included if used)."""
    timings: dict[str, float]
    """Seconds spent transpiling, optimising and sampling."""
    evaluations: int
    """Number of energy evaluations by the optimiser."""
    engine: str
    """Which simulator or backend ran it."""
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    """``exact`` (from the kernel's distribution) and ``sampled`` P(optimum), P(feasible), ratio."""
    circuit: dict[str, Any] = field(default_factory=dict)
    """Transpiled circuit size (primitives engine): depth, two-qubit gates, operations."""
    by_depth: dict[int, dict[str, float]] = field(default_factory=dict)
    """Depth p -> expected energy, evaluations, seconds and (kernel + landscape) exact quality at p."""


def interpolate_angles(angles: np.ndarray) -> np.ndarray:
    """Grow p angles to p + 1 (INTERP): ``new_i = (i/p) old_{i-1} + ((p-i)/p) old_i``."""
    p = len(angles)
    padded = np.concatenate([[0.0], angles, [0.0]])
    return np.array([(i / p) * padded[i] + ((p - i) / p) * padded[i + 1] for i in range(p + 1)])


def split_constant(operator):
    """Split off the identity term: a global phase on hardware, and Aer rejects a parameterised one."""
    from qiskit.quantum_info import SparsePauliOp

    labels = operator.paulis.to_labels()
    keep = [i for i, label in enumerate(labels) if set(label) != {"I"}]
    constant = float(sum(operator.coeffs[i].real for i in range(len(labels)) if i not in keep))
    if not keep:
        return SparsePauliOp("I" * operator.num_qubits, 0.0), constant
    return operator[keep], constant


def _parameter_values(circuit, gammas: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """Angles in ``circuit.parameters`` order (``qaoa_ansatz`` names them γ[l] and β[l])."""
    values = []
    for param in circuit.parameters:
        source = gammas if param.vector.name == "γ" else betas
        values.append(source[param.index])
    return np.array(values)


class QAOASolver:
    """QAOA for one QUBO; plug in any backend (transpiled for it) or any SamplerV2/EstimatorV2."""

    def __init__(self, config: QAOAConfig | None = None, backend=None, sampler=None, estimator=None) -> None:
        """``backend`` (default AerSimulator) is the transpile target; ``sampler``/``estimator`` default to
        Aer's V2 primitives on an Aer backend, else ``BackendSamplerV2``/``BackendEstimatorV2``. Passing
        any of them selects the primitives engine."""
        self.config = config or QAOAConfig()
        self.backend, self.sampler, self.estimator = backend, sampler, estimator
        if any(obj is not None for obj in (backend, sampler, estimator)):
            self.config.engine = "primitives"

    def cost_qubo(self, problem: QUBO) -> tuple[QUBO, bool]:
        """The QUBO whose Hamiltonian is evolved, and whether the XY/Dicke (fixed-weight) form is used."""
        if not problem.constrained:
            return problem, False
        if self.config.formulation == "fixed_weight":
            return problem.without_constraints(), True
        strength = self.config.penalty if self.config.penalty is not None else problem.default_penalty()
        return problem.with_cardinality_penalty(strength), False

    def ansatz(self, cost, n: int, constraints, fixed_weight: bool, reps: int):
        """The parameterised ``qaoa_ansatz`` circuit for depth ``reps`` (``constraints`` as
        :attr:`QUBO.constraints`: one Dicke state and one XY ring per group)."""
        from qiskit.circuit.library import qaoa_ansatz

        if fixed_weight:
            return qaoa_ansatz(cost, reps=reps, initial_state=grouped_dicke_circuit(n, constraints),
                               mixer_operator=grouped_xy_mixer(n, constraints))
        return qaoa_ansatz(cost, reps=reps, mixer_operator=x_mixer(n))

    def _primitives(self):
        from qiskit.primitives import BackendEstimatorV2, BackendSamplerV2
        from qiskit_aer import AerSimulator
        from qiskit_aer.primitives import EstimatorV2, SamplerV2

        backend = self.backend or AerSimulator(seed_simulator=self.config.seed)
        is_aer = isinstance(backend, AerSimulator)
        estimator = self.estimator or (
            EstimatorV2(options={"backend_options": {"seed_simulator": self.config.seed}}) if is_aer
            else BackendEstimatorV2(backend=backend))
        sampler = self.sampler or (
            SamplerV2(seed=self.config.seed) if is_aer else BackendSamplerV2(backend=backend))
        return backend, estimator, sampler

    def solve(self, problem: QUBO, landscape: Landscape | None = None) -> QAOAResult:
        """Optimise angles depth by depth, sample, and report quality against ``landscape`` if given."""
        cfg = self.config
        n, k = problem.num_variables, problem.constraints
        cost_qubo, fixed_weight = self.cost_qubo(problem)
        scale = cost_qubo.scale()
        timings = {"transpile": 0.0, "optimise": 0.0, "sample": 0.0}
        evaluations = 0
        circuit_info: dict[str, Any] = {}

        if cfg.engine == "kernel":
            t0 = time.perf_counter()
            if fixed_weight:
                kernel = QAOAKernel(lambda basis: cost_qubo.energies_of(basis) / scale, n, "xy",
                                    constraints=k)
            else:
                kernel = QAOAKernel(cost_qubo.all_energies() / scale, n, "x")
            timings["setup"] = time.perf_counter() - t0
            engine_name = "statevector_kernel"

            def make_energy(reps: int):
                return lambda g, b: kernel.expectation(g, b)
        else:
            from qiskit.transpiler import generate_preset_pass_manager

            backend, estimator, sampler = self._primitives()
            engine_name = getattr(backend, "name", type(backend).__name__)
            pm = generate_preset_pass_manager(optimization_level=cfg.optimization_level, backend=backend,
                                              seed_transpiler=cfg.seed)
            hamiltonian, constant = split_constant(cost_qubo.to_ising() / scale)

            def make_energy(reps: int):
                t = time.perf_counter()
                isa = pm.run(self.ansatz(hamiltonian, n, k, fixed_weight, reps))
                obs = hamiltonian.apply_layout(isa.layout)
                timings["transpile"] += time.perf_counter() - t

                def energy(g: np.ndarray, b: np.ndarray) -> float:
                    job = estimator.run([(isa, obs, _parameter_values(isa, g, b))])
                    return float(job.result()[0].data.evs) + constant
                return energy

        rng = np.random.default_rng(cfg.seed)
        angles: dict[int, dict[str, list[float]]] = {}
        by_depth: dict[int, dict[str, float]] = {}
        basis_bits = index_to_bits(kernel.basis, n) if cfg.engine == "kernel" and landscape is not None else None
        gammas = betas = np.zeros(0)
        for reps in range(1, cfg.reps + 1):
            energy = make_energy(reps)
            t = time.perf_counter()
            if reps == 1:
                # A coarse grid picks the basins; the optimiser refines the best few.
                grid = [(g, b) for g in (0.1, 0.3, 0.8, 1.6) for b in (-0.6, -0.25, 0.25, 0.6)]
                values = [energy(np.array([g]), np.array([b])) for g, b in grid]
                evaluations += len(grid)
                starts = [np.array(grid[i]) for i in np.argsort(values)[: cfg.starts]]
            else:
                grown = np.concatenate([interpolate_angles(gammas), interpolate_angles(betas)])
                starts = [grown + rng.normal(0, 1e-3 if i == 0 else 0.1, size=grown.shape)
                          for i in range(cfg.starts)]

            def objective(theta: np.ndarray, reps: int = reps, energy=energy) -> float:
                return energy(theta[:reps], theta[reps:])

            options = {"maxiter": cfg.maxiter, "rhobeg": 0.2} if cfg.optimizer == "COBYLA" else {
                "maxiter": cfg.maxiter}
            runs = [minimize(objective, start, method=cfg.optimizer, options=options) for start in starts]
            evaluations += sum(int(r.nfev) for r in runs)
            res = min(runs, key=lambda r: r.fun)
            gammas, betas = res.x[:reps].copy(), res.x[reps:].copy()
            angles[reps] = {"gammas": gammas.tolist(), "betas": betas.tolist()}
            timings["optimise"] += time.perf_counter() - t
            by_depth[reps] = {"expected_energy": float(res.fun) * scale, "evaluations": evaluations,
                              "seconds": timings["optimise"]}
            if cfg.engine == "kernel" and landscape is not None:
                by_depth[reps].update(distribution_quality(
                    problem, landscape, basis_bits, kernel.probabilities(gammas, betas)))
            log.info("QAOA p=%d: <H>=%.5f after %d evaluations", reps, res.fun * scale, evaluations)
        expected = float(res.fun) * scale

        t = time.perf_counter()
        quality: dict[str, dict[str, float]] = {}
        if cfg.engine == "kernel":
            counts = kernel.sample(gammas, betas, cfg.shots, seed=cfg.seed)
            if landscape is not None:
                quality["exact"] = {k: v for k, v in by_depth[cfg.reps].items()
                                    if k in ("p_optimum", "p_feasible", "ratio", "p_optimum_vs_uniform")}
        else:
            circuit = self.ansatz(hamiltonian, n, k, fixed_weight, cfg.reps)
            circuit.measure_all()
            isa = pm.run(circuit)
            ops = isa.count_ops()
            circuit_info = {"depth": isa.depth(), "two_qubit_gates": isa.num_nonlocal_gates(),
                            "operations": {name: int(c) for name, c in ops.items()}}
            job = sampler.run([(isa, _parameter_values(isa, gammas, betas))], shots=cfg.shots)
            raw = job.result()[0].data.meas.get_counts()
            counts = {int(key, 2): int(c) for key, c in raw.items()}
        timings["sample"] = time.perf_counter() - t

        states = np.array(sorted(counts))
        bits = index_to_bits(states, n)
        shots = np.array([counts[s] for s in states], dtype=np.float64)
        if landscape is not None:
            quality["sampled"] = distribution_quality(problem, landscape, bits, shots)
        energies = np.asarray(problem.energy(bits))
        feasible = np.asarray(problem.is_feasible(bits))
        pick = int(np.argmin(np.where(feasible, energies, np.inf))) if feasible.any() else int(np.argmin(energies))
        solution = Solution("qaoa", bits[pick], float(energies[pick]), bool(feasible[pick]),
                            sum(timings.values()), {"config": asdict(cfg)})
        return QAOAResult(solution, counts, angles, expected, timings, evaluations, engine_name, quality,
                          circuit_info, by_depth)
