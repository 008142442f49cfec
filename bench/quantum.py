"""QAOA on head-pruning-shaped QUBOs against uniform feasible sampling and classical solvers, and the
statevector kernel against Qiskit Aer per evaluation.

    python -m bench.quantum            # full run (n = 8..20, p = 1..3, kernel vs Aer n = 16..24)
    python -m bench.quantum --quick    # a smoke run in a minute or two

Headline measures are distribution-level (never best-of-shots): P(optimum) from QAOA's exact output
distribution, and the expected feasible-normalised ratio (1 = optimum, 0 = worst feasible; infeasible
samples count 0), each next to what uniform sampling of feasible states gets. Writes
bench/results/quantum.json and bench/results/quantum.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from quantum_kernels.anneal import AnnealConfig, simulated_annealing
from quantum_kernels.exact import solve_exact
from quantum_kernels.greedy import greedy
from quantum_kernels.qaoa import QAOAConfig, QAOASolver, split_constant
from quantum_kernels.qubo import random_head_pruning_qubo
from quantum_kernels.statevector import QAOAKernel

RESULTS = Path(__file__).parent / "results"
log = logging.getLogger("bench.quantum")


def quality_run(sizes: list[int], instances: int, max_reps: int, maxiter: int, sa_runs: int) -> list[dict]:
    """QAOA (both formulations, p = 1..max_reps) and classical solvers on random instances."""
    rows = []
    for n in sizes:
        for seed in range(instances):
            q = random_head_pruning_qubo(n, n // 2, seed=1000 * n + seed)
            best, land = solve_exact(q)
            row = {"n": n, "k": n // 2, "seed": seed, "uniform_p_optimum": land.uniform_p_optimum,
                   "uniform_ratio": land.uniform_ratio, "exact_seconds": best.seconds}
            sa = [simulated_annealing(q, AnnealConfig(seed=s)) for s in range(sa_runs)]
            row["sa_p_optimum"] = float(np.mean([abs(s.energy - land.optimum) < 1e-9 for s in sa]))
            row["sa_ratio"] = float(np.mean([land.ratio(s.energy) for s in sa]))
            row["sa_seconds"] = float(np.mean([s.seconds for s in sa]))
            g = greedy(q)
            row.update(greedy_optimal=abs(g.energy - land.optimum) < 1e-9, greedy_ratio=land.ratio(g.energy),
                       greedy_seconds=g.seconds)
            for formulation in ("fixed_weight", "penalty"):
                cfg = QAOAConfig(reps=max_reps, formulation=formulation, maxiter=maxiter, seed=seed)
                result = QAOASolver(cfg).solve(q, land)
                for p, stats in result.by_depth.items():
                    row[f"{formulation}_p{p}"] = {key: stats[key] for key in (
                        "p_optimum", "p_feasible", "ratio", "p_optimum_vs_uniform", "seconds", "evaluations")}
            rows.append(row)
            log.info("n=%d seed=%d: fixed p%d P(opt)/uniform %.1f, penalty %.2f", n, seed, max_reps,
                     row[f"fixed_weight_p{max_reps}"]["p_optimum_vs_uniform"],
                     row[f"penalty_p{max_reps}"]["p_optimum_vs_uniform"])
    return rows


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def kernel_vs_aer(sizes: list[int], reps: int, aer_repeats: int, single_from: int) -> list[dict]:
    """Seconds per energy evaluation at depth ``reps``: our kernel vs Aer's EstimatorV2 (transpiled)."""
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import EstimatorV2

    backend = AerSimulator()
    pm = generate_preset_pass_manager(optimization_level=1, backend=backend)
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        q = random_head_pruning_qubo(n, n // 2, seed=n)
        gammas, betas = rng.uniform(0.1, 1.0, reps), rng.uniform(-0.5, 0.5, reps)
        for formulation in ("fixed_weight", "penalty"):
            solver = QAOASolver(QAOAConfig(reps=reps, formulation=formulation))
            cost, fixed = solver.cost_qubo(q)
            scale = cost.scale()
            t = time.perf_counter()
            kernel = QAOAKernel(cost.all_energies() / scale, n, "xy" if fixed else "x", q.hamming_weight)
            setup = time.perf_counter() - t
            kernel.expectation(gammas, betas)  # compiled already; warms caches
            ours = _median_time(lambda k=kernel, g=gammas, b=betas: k.expectation(g, b), 5)
            hamiltonian, constant = split_constant(cost.to_ising() / scale)
            t = time.perf_counter()
            isa = pm.run(solver.ansatz(hamiltonian, n, q.hamming_weight, fixed, reps))
            transpile = time.perf_counter() - t
            obs = hamiltonian.apply_layout(isa.layout)
            from quantum_kernels.qaoa import _parameter_values

            values = _parameter_values(isa, gammas, betas)
            estimator = EstimatorV2()
            energy = {}

            def run_aer(est=estimator, isa=isa, obs=obs, values=values, energy=energy):
                energy["aer"] = float(est.run([(isa, obs, values)]).result()[0].data.evs)

            repeats = 1 if n >= single_from else aer_repeats
            aer = _median_time(run_aer, repeats)
            agree = abs(energy["aer"] + constant - kernel.expectation(gammas, betas))
            rows.append({"n": n, "formulation": formulation, "reps": reps, "kernel_seconds": ours,
                         "kernel_setup_seconds": setup, "aer_seconds": aer, "aer_repeats": repeats,
                         "aer_transpile_seconds": transpile, "speedup": aer / ours,
                         "two_qubit_gates": isa.num_nonlocal_gates(), "energy_abs_diff": agree})
            log.info("n=%d %s: kernel %.4f s, Aer %.3f s (x%.0f), |dE|=%.1e", n, formulation, ours, aer,
                     aer / ours, agree)
    return rows


def summarise(rows: list[dict], max_reps: int) -> list[dict]:
    """Means per n (geometric mean for P(optimum) ratios)."""
    table = []
    for n in sorted({r["n"] for r in rows}):
        sub = [r for r in rows if r["n"] == n]
        entry = {"n": n, "instances": len(sub),
                 "uniform_p_optimum": float(np.mean([r["uniform_p_optimum"] for r in sub])),
                 "uniform_ratio": float(np.mean([r["uniform_ratio"] for r in sub]))}
        for form in ("fixed_weight", "penalty"):
            for p in range(1, max_reps + 1):
                stats = [r[f"{form}_p{p}"] for r in sub]
                entry[f"{form}_p{p}"] = {
                    "p_optimum": float(np.mean([s["p_optimum"] for s in stats])),
                    "p_optimum_vs_uniform_geomean": float(np.exp(np.mean(np.log(
                        [max(s["p_optimum_vs_uniform"], 1e-12) for s in stats])))),
                    "p_feasible": float(np.mean([s["p_feasible"] for s in stats])),
                    "ratio": float(np.mean([s["ratio"] for s in stats])),
                    "seconds": float(np.mean([s["seconds"] for s in stats])),
                }
        for key in ("sa_p_optimum", "sa_ratio", "sa_seconds", "greedy_ratio", "greedy_seconds", "exact_seconds"):
            entry[key] = float(np.mean([r[key] for r in sub]))
        entry["greedy_optimal_fraction"] = float(np.mean([r["greedy_optimal"] for r in sub]))
        table.append(entry)
    return table


def plot(summary: list[dict], timing: list[dict], max_reps: int, path: Path) -> None:
    """P(optimum)/uniform per n and depth; kernel vs Aer seconds per evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ns = [s["n"] for s in summary]
    for form, style in (("fixed_weight", "-"), ("penalty", "--")):
        for p in range(1, max_reps + 1):
            ax1.plot(ns, [s[f"{form}_p{p}"]["p_optimum_vs_uniform_geomean"] for s in summary], style,
                     marker="o", label=f"{form} p={p}")
    ax1.axhline(1.0, color="grey", lw=0.8)
    ax1.set(yscale="log", xlabel="n (keep n/2)", ylabel="P(optimum) / uniform feasible",
            title="QAOA vs uniform feasible sampling")
    ax1.legend(fontsize=7)
    for form, style in (("fixed_weight", "-"), ("penalty", "--")):
        rows = [t for t in timing if t["formulation"] == form]
        ax2.plot([t["n"] for t in rows], [t["kernel_seconds"] for t in rows], style, marker="o",
                 label=f"kernel {form}")
        ax2.plot([t["n"] for t in rows], [t["aer_seconds"] for t in rows], style, marker="s",
                 label=f"Aer {form}")
    ax2.set(yscale="log", xlabel="n", ylabel="seconds per evaluation", title="kernel vs Aer (p=3)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes, one instance (smoke run).")
    parser.add_argument("--instances", type=int, default=3, help="Random instances per size.")
    parser.add_argument("--maxiter", type=int, default=150, help="Optimiser iterations per depth.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("qiskit").setLevel(logging.WARNING)
    logging.getLogger("quantum_kernels").setLevel(logging.WARNING)
    max_reps = 3
    if args.quick:
        sizes, instances, timing_sizes, maxiter = [8, 12], 1, [12, 14], 60
    else:
        sizes, instances, timing_sizes, maxiter = [8, 12, 16, 20], args.instances, [16, 18, 20, 22, 24], args.maxiter
    t0 = time.perf_counter()
    rows = quality_run(sizes, instances, max_reps, maxiter, sa_runs=10)
    summary = summarise(rows, max_reps)
    timing = kernel_vs_aer(timing_sizes, max_reps, aer_repeats=3, single_from=22)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "config": {"sizes": sizes, "instances": instances, "max_reps": max_reps, "maxiter": maxiter,
                   "timing_sizes": timing_sizes, "sa": {"runs": 10, **AnnealConfig().__dict__},
                   "quick": args.quick},
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "summary": summary, "instances": rows, "kernel_vs_aer": timing,
        "seconds": time.perf_counter() - t0,
    }
    name = "quantum_quick" if args.quick else "quantum"
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    plot(summary, timing, max_reps, RESULTS / f"{name}.png")
    log.info("wrote %s (%.0f s)", RESULTS / f"{name}.json", out["seconds"])


if __name__ == "__main__":
    main()
