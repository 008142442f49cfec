"""``nexus-k eval``: run evaluation tasks, compare runs, list tasks. Heavy imports stay inside commands."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Offline Korean competence and bias evaluation.")


@app.command("run")
def run(
    model: str | None = typer.Option(None, "--model", "-m",
                                     help="Local model folder, hub name, or the endpoint's model name."),
    tasks: str | None = typer.Option(None, "--tasks", "-t", help="Comma-separated tasks or families (`eval list`)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder for results.json, samples and report.html."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Run config YAML (configs/eval/*.yaml)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N documents of each task."),
    num_fewshot: int | None = typer.Option(None, "--num-fewshot", help="Few-shot examples (task default)."),
    backend: str | None = typer.Option(None, "--backend", help="auto (default), hf, vllm, engine-hf or openai."),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (.../v1)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="NEXUS_K_EVAL_API_KEY",
                                       help="Key for the endpoint (else OPENAI_API_KEY)."),
    api: str | None = typer.Option(None, "--api", help="Endpoint route: completions (default) or chat."),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="NEXUS_K_EVAL_DATA",
                                         help="Local copies of the data sets (else the hub)."),
    batch_size: int | None = typer.Option(None, "--batch-size",
                                          help="Contexts per forward pass / requests in flight (16)."),
    dtype: str | None = typer.Option(None, "--dtype", help="auto (default), float32, bfloat16 or float16."),
    device: str | None = typer.Option(None, "--device", help="Torch device for the transformers backend (cpu)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for few-shot sampling (1234)."),
    adapter: str | None = typer.Option(None, "--adapter",
                                       help="PEFT LoRA adapter folder merged into --model (transformers backend)."),
) -> None:
    """Evaluate a model on tasks; writes results.json, samples_<task>.jsonl and report.html."""
    from rich.console import Console

    from evals.config import RunConfig
    from evals.report import results_table, write_report
    from evals.runner import run_evaluation
    from nexus_k.core.errors import UserError

    if api not in (None, "completions", "chat"):
        raise UserError("--api must be completions or chat")
    given = {
        "model": model, "tasks": [t for t in tasks.split(",") if t.strip()] if tasks else None, "out_dir": out,
        "backend": backend, "base_url": base_url, "api_key": api_key, "api": api, "limit": limit,
        "num_fewshot": num_fewshot, "data_dir": data_dir, "batch_size": batch_size, "dtype": dtype,
        "device": device, "seed": seed, "adapter": adapter,
    }
    if config is not None:
        run_config = RunConfig.from_file(config, **given)
    else:
        missing = [flag for flag, key in (("--model", "model"), ("--tasks", "tasks"), ("--out", "out_dir"))
                   if not given[key]]
        if missing:
            raise UserError(f"missing {', '.join(missing)} (or give --config)")
        run_config = RunConfig(**{k: v for k, v in given.items() if v is not None})
    results = run_evaluation(run_config)
    report = write_report(results, run_config.out_dir)
    console = Console()
    console.print(results_table(results))
    console.print(f"results: {run_config.out_dir / 'results.json'}  report: {report}")


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
