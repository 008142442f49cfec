"""``nexus-k quantum``: solve QUBOs with QAOA (and classical baselines), prune attention heads."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from nexus_k.core.errors import UserError

app = typer.Typer(no_args_is_help=True)

CLI_MAX_VARIABLES = 24
"""Largest problem ``solve`` simulates with QAOA (a 2^24 statevector is 128 MB)."""


def _parse_layers(spec: str | None) -> list[int] | None:
    if not spec:
        return None
    layers: list[int] = []
    try:
        for part in spec.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                layers += list(range(int(lo), int(hi) + 1))
            else:
                layers.append(int(part))
    except ValueError:
        raise UserError(f"--layers must look like '0-3' or '0,2,5', got {spec!r}") from None
    return layers


def _load_request(path: Path, overrides: dict):
    from pydantic import ValidationError

    from quantum_kernels.schema import QAOARequest

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no such file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object (a QUBO problem or a QAOA request)")
    request = data if "problem" in data else {"problem": data}
    request.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return QAOARequest.model_validate(request)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{path}: {where + ': ' if where else ''}{first['msg']}") from None


@app.command("solve")
def solve(
    qubo_json: Annotated[Path, typer.Argument(help="A QUBO problem or a full QAOA request (JSON).")],
    solver: Annotated[str, typer.Option(help="qaoa | sa | greedy | exact")] = "qaoa",
    reps: Annotated[int | None, typer.Option(help="QAOA depth p.")] = None,
    formulation: Annotated[str | None, typer.Option(help="fixed_weight | penalty")] = None,
    shots: Annotated[int | None, typer.Option(help="Bitstrings sampled.")] = None,
    maxiter: Annotated[int | None, typer.Option(help="Optimiser iterations per depth.")] = None,
    baseline: Annotated[str | None, typer.Option(help="Classical baseline: sa | greedy | exact.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    aer: Annotated[bool, typer.Option("--aer", help="Run the circuits on Qiskit Aer instead of the kernel.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the JSON result here instead of stdout.")] = None,
) -> None:
    """Solve a QUBO (schema: `nexus-k quantum schema`) and compare with a classical solver."""
    overrides = {"reps": reps, "formulation": formulation, "shots": shots, "maxiter": maxiter,
                 "baseline": baseline, "seed": seed}
    request = _load_request(qubo_json, overrides)
    logging.getLogger("qiskit").setLevel(logging.WARNING)
    if solver == "qaoa":
        from quantum_kernels.service import ProblemTooLarge, run_qaoa_request

        backend = None
        if aer:
            from qiskit_aer import AerSimulator

            backend = AerSimulator(seed_simulator=request.seed)
        try:
            result = run_qaoa_request(request, CLI_MAX_VARIABLES, backend=backend).model_dump()
        except ProblemTooLarge as err:
            raise UserError(f"{err} (use --solver sa for large problems)") from None
    elif solver in ("sa", "greedy", "exact"):
        from quantum_kernels.exact import solve_exact
        from quantum_kernels.qubo import QUBO
        from quantum_kernels.service import EXACT_LANDSCAPE_MAX, run_classical

        problem = QUBO.from_dict(request.problem.model_dump())
        result = {"solution": run_classical(problem, solver, request.seed).to_dict()}
        if problem.num_variables <= EXACT_LANDSCAPE_MAX:
            result["landscape"] = solve_exact(problem)[1].to_dict()
    else:
        raise UserError(f"--solver must be qaoa, sa, greedy or exact, got {solver!r}")
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        best = result.get("best") or result["solution"]
        typer.echo(f"{solver}: best {best['bitstring']} energy {best['energy']:.6g} -> {out}")


@app.command("schema")
def schema() -> None:
    """Print the JSON schema of a QAOA request (the body of POST /v1/quantum/qaoa)."""
    from quantum_kernels.schema import QAOARequest

    typer.echo(json.dumps(QAOARequest.model_json_schema(), indent=2, ensure_ascii=False))


@app.command("prune-heads")
def prune_heads_command(
    model: Annotated[str, typer.Option(help="Model folder, hub name or .gguf file.")],
    keep_per_layer: Annotated[int, typer.Option(help="Query heads every pruned layer keeps.")],
    out: Annotated[Path, typer.Option(help="Where to save the pruned model.")],
    solver: Annotated[str, typer.Option(help="qaoa | sa | greedy | exact")] = "qaoa",
    layers: Annotated[str | None, typer.Option(
        help="Layers to prune, e.g. '0-3' (default: all; a subset gives a same-shape model).")] = None,
    calibration: Annotated[Path | None, typer.Option(help="Korean text file (default: bundled story).")] = None,
    reps: Annotated[int, typer.Option(help="QAOA depth p.")] = 3,
    formulation: Annotated[str, typer.Option(help="fixed_weight | penalty")] = "fixed_weight",
    seq_len: Annotated[int, typer.Option(help="Tokens per calibration sequence.")] = 128,
    max_sequences: Annotated[int, typer.Option(help="Calibration sequences at most.")] = 32,
    redundancy_weight: Annotated[float, typer.Option(help="Weight of the redundancy penalty.")] = 0.5,
    random_trials: Annotated[int, typer.Option(help="Random masks for the random baseline.")] = 5,
    importance: Annotated[str, typer.Option(help="ablation (one forward pass per head) | gradient")] = "ablation",
    recover_steps: Annotated[int, typer.Option(help="Fine-tuning steps on the calibration text after pruning.")] = 0,
    recover_lr: Annotated[float, typer.Option(help="Peak learning rate of the recovery fine-tune.")] = 5e-5,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Keep K query heads per layer, chosen by a QUBO (importance minus redundancy); save a smaller model."""
    from rich.console import Console
    from rich.table import Table

    from quantum_kernels.head_pruning import PruneConfig, prune_heads

    if calibration is not None and not calibration.is_file():
        raise UserError(f"no such calibration file: {calibration}")
    if not Path(model).exists() and (model.endswith(".gguf") or model.startswith((".", "/"))):
        raise UserError(f"no such model: {model}")
    logging.getLogger("qiskit").setLevel(logging.WARNING)
    try:
        config = PruneConfig(model=model, keep_per_layer=keep_per_layer, solver=solver,
                             layers=_parse_layers(layers), calibration_file=str(calibration) if calibration else None,
                             seq_len=seq_len, max_sequences=max_sequences, redundancy_weight=redundancy_weight,
                             qaoa_reps=reps, qaoa_formulation=formulation, random_trials=random_trials,
                             importance=importance, recover_steps=recover_steps, recover_lr=recover_lr, seed=seed)
        report = prune_heads(config, out)
    except (ValueError, OSError) as err:
        raise UserError(str(err).splitlines()[0]) from None
    table = Table(title=f"held-out perplexity, keeping {keep_per_layer} query heads per layer")
    table.add_column("mask")
    table.add_column("perplexity", justify="right")
    for name, value in report.perplexity.items():
        table.add_row(name, f"{value:.3f}")
    Console().print(table)
    sizes = report.sizes
    shape = "smaller checkpoint" if sizes["structural"] else "same shape, pruned heads zeroed"
    typer.echo(f"parameters: {sizes['parameters_before']:,} -> {sizes['parameters_after']:,} ({shape})\n"
               f"saved: {out} (head_pruning.json beside it)")
