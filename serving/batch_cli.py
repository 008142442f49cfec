"""``nexus-k batch run INPUT.jsonl --out OUTPUT.jsonl``: a Batch API input file processed offline, with no
server: the app is built in-process on an engine and every line goes through the same handlers as online.
Each finished line is appended to OUTPUT at once, so ``--resume`` after a kill skips the custom_ids there."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from nexus_k.core.errors import UserError

app = typer.Typer(no_args_is_help=True)
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


def read_input(path: Path) -> tuple[str, str | None, set[str]]:
    """Check every line (nothing is kept but the custom_ids): the input's endpoint, the model its lines name
    and the custom_ids; the first bad line is a UserError."""
    from serving.batch_validate import check_line

    if not path.is_file():
        raise UserError(f"{path}: no such file")
    seen: set[str] = set()
    endpoint: str | None = None
    models: set[str] = set()
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if endpoint is None:
                try:
                    endpoint = str(json.loads(raw).get("url"))
                except (ValueError, AttributeError):
                    endpoint = ENDPOINTS[0]
                if endpoint not in ENDPOINTS:
                    raise UserError(f"{path}: Line {line_no}: url must be one of {', '.join(ENDPOINTS)}.")
            line, error = check_line(raw, line_no, endpoint, lambda model: None, seen)
            if error is not None:
                raise UserError(f"{path}: {error['message']}")
            model = line[2].get("model") if line is not None else None
            if isinstance(model, str):
                models.add(model)
    if endpoint is None:
        raise UserError(f"{path} holds no requests")
    if len(models) > 1:
        raise UserError(f"{path}: lines name several models ({', '.join(sorted(models))}); one run serves one")
    return endpoint, next(iter(models), None), seen


def iter_lines(path: Path, skip: set[str]) -> Iterator[tuple[int, str, dict]]:
    """The (checked) input's lines as ``(line_no, custom_id, body)``, read as they are needed, but those in
    ``skip``."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if raw.strip():
                item = json.loads(raw)
                if item["custom_id"] not in skip:
                    yield line_no, item["custom_id"], item["body"]


def finished_ids(out: Path) -> set[str]:
    """custom_ids already in OUTPUT; a line cut by a kill is removed so that it runs again."""
    done: set[str] = set()
    if not out.exists():
        return done
    keep = 0
    with out.open("rb") as handle:
        for raw in handle:
            try:
                custom_id = json.loads(raw)["custom_id"] if raw.endswith(b"\n") else None
            except (ValueError, KeyError, TypeError):
                custom_id = None
            if custom_id is None:
                break
            done.add(custom_id)
            keep += len(raw)
    os.truncate(out, keep)
    return done


async def run_lines(settings: Any, endpoint: str, lines: Iterator[tuple[int, str, dict]], total: int, out: Path,
                    concurrency: int, label: str) -> tuple[int, int]:
    """Run ``lines`` through an in-process app on the engine ``settings`` names; (succeeded, failed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from serving.app import build_app
    from serving.batch_runner import line_outcome, output_line, send_line
    from serving.engines import load_engine
    from serving.security.internal import InternalCall
    from serving.storage.batches import BatchLine

    engine = await load_engine(settings.engine_settings())
    counts = [0, 0]
    try:
        app = build_app(settings, engine)
        call = InternalCall(None, label)
        columns = (TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("failed {task.fields[failed]}"), TimeRemainingColumn())
        with out.open("ab") as sink, Progress(*columns, transient=False) as progress:
            task = progress.add_task("lines", total=total, failed=0)
            queue = lines

            async def worker() -> None:
                for line_no, custom_id, body in queue:  # the workers share one iterator
                    status, request_id, data = await send_line(app, call, endpoint, body)
                    ok, response, error = line_outcome(status, request_id, data)
                    row = BatchLine(line_no=line_no, custom_id=custom_id, response=response, error=error)
                    sink.write(output_line(label, row))
                    sink.flush()  # in the page cache: a kill -9 loses nothing written
                    counts[0 if ok else 1] += 1
                    progress.update(task, advance=1, failed=counts[1])

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            os.fsync(sink.fileno())
    finally:
        await engine.shutdown()
    return counts[0], counts[1]


@app.command("run")
def run(
    input_file: Path = typer.Argument(..., metavar="INPUT.jsonl", help="Batch API input lines."),
    out: Path = typer.Option(..., "--out", help="Output lines (OpenAI's batch output format, errors included)."),
    model: str | None = typer.Option(None, "--model", help="Model folder or hub id (default: the demo model)."),
    engine: str = typer.Option("hf", "--engine", help="hf (transformers) or vllm."),
    resume: bool = typer.Option(False, "--resume", help="Continue OUTPUT: skip the custom_ids already in it."),
    concurrency: int = typer.Option(16, "--concurrency", min=1, help="Lines in flight at once."),
    max_model_len: int | None = typer.Option(None, "--max-model-len", help="Context length cap."),
) -> None:
    """Process a Batch API input file offline (no server), with a progress bar; resumable after a kill."""
    from serving.config import resolve_settings

    if engine not in ("hf", "vllm"):
        raise UserError(f"--engine must be hf or vllm, not {engine!r}")
    endpoint, named, custom_ids = read_input(input_file)
    if out.exists() and not resume:
        raise UserError(f"{out} exists: pass --resume to continue it, or choose another --out")
    done = finished_ids(out) & custom_ids if resume else set()
    todo = len(custom_ids) - len(done)
    if not todo:
        typer.echo(f"all {len(custom_ids)} lines are in {out}", err=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {"engine": engine, "batch_concurrency": 0, "web_ui": False}
    if max_model_len is not None:
        values["max_model_len"] = max_model_len
    if model is None:
        from serving.cli import _demo_model

        model, default_name = _demo_model({})
        values["served_model_name"] = named or default_name
    else:
        values["served_model_name"] = named or model
    with tempfile.TemporaryDirectory(prefix="nexus-k-batch-") as scratch:  # its audit rows are not kept
        values |= {"model": model, "database_url": f"sqlite:///{scratch}/batch.db", "data_dir": scratch}
        settings = resolve_settings(values)
        lines = iter_lines(input_file, done)
        ok, failed = asyncio.run(run_lines(settings, endpoint, lines, todo, out, concurrency,
                                           f"offline:{input_file.name}"))
    typer.echo(f"{ok} succeeded, {failed} failed, {len(done)} already done: {out}", err=True)
