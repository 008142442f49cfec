"""``nexus-k eval``: run evaluation tasks, compare runs, list tasks. Heavy imports stay inside commands."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Offline Korean competence and bias evaluation.")


@app.command("run")
def run(
    model: str = typer.Option(..., "--model", "-m", help="Local model folder, hub name, or the endpoint's model."),
    tasks: str = typer.Option(..., "--tasks", "-t", help="Comma-separated tasks or families (see `eval list`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.json, samples and report.html."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N documents of each task."),
    num_fewshot: int | None = typer.Option(None, "--num-fewshot", help="Few-shot examples (task default)."),
    backend: str = typer.Option("auto", "--backend", help="auto, hf, vllm, engine-hf or openai."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (…/v1)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="NEXUS_K_EVAL_API_KEY",
                                       help="Key for the endpoint (else OPENAI_API_KEY)."),
    api: str = typer.Option("completions", "--api", help="Endpoint route: completions or chat."),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="NEXUS_K_EVAL_DATA",
                                         help="Local copies of the data sets (else the hub)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Contexts per forward pass / requests in flight."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the transformers backend."),
    seed: int = typer.Option(1234, "--seed", help="Seed for few-shot sampling."),
) -> None:
    """Evaluate a model on tasks; writes results.json, samples_<task>.jsonl and report.html."""
    from rich.console import Console

    from evals.config import RunConfig
    from evals.report import results_table, write_report
    from evals.runner import run_evaluation
    from nexus_k.errors import UserError

    if api not in ("completions", "chat"):
        raise UserError("--api must be completions or chat")
    config = RunConfig(model=model, tasks=[t for t in tasks.split(",") if t.strip()], out_dir=out,
                       backend=backend, base_url=base_url, api_key=api_key, api=api, limit=limit,
                       num_fewshot=num_fewshot, data_dir=data_dir, batch_size=batch_size, dtype=dtype,
                       device=device, seed=seed)
    results = run_evaluation(config)
    report = write_report(results, config.out_dir)
    console = Console()
    console.print(results_table(results))
    console.print(f"results: {config.out_dir / 'results.json'}  report: {report}")


@app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="Run folders (or results.json files) to put side by side."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write compare.html and compare.json here."),
) -> None:
    """Several runs side by side: a table, and with --out an HTML page with a plot."""
    from rich.console import Console

    from evals.report import comparison_table, load_results, write_comparison

    loaded = [load_results(path) for path in runs]
    Console().print(comparison_table(loaded))
    if out is not None:
        path = write_comparison(loaded, out)
        typer.echo(f"comparison: {path}")


@app.command("list")
def list_tasks() -> None:
    """Every task: family, output type, version, metrics and what it measures."""
    from rich.console import Console
    from rich.table import Table

    from evals.registry import all_tasks

    table = Table(title="evaluation tasks")
    for column in ("task", "family", "type", "version", "metrics", "description"):
        table.add_column(column)
    for name, task in all_tasks().items():
        table.add_row(name, task.family, task.output_type, task.version, ", ".join(task.metrics),
                      task.description)
    Console(width=200).print(table)
