"""Present results: a rich table in the terminal, report.html with matplotlib plots, and run comparisons."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from evals.runner import RESULTS_FILE
from nexus_k.core.errors import UserError

REPORT_FILE = "report.html"
"""Name of the HTML report inside the output folder."""


def load_results(path: Path) -> dict[str, Any]:
    """results.json from a run folder (or the file itself)."""
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"no {RESULTS_FILE} in {path}")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{file} is not valid JSON: {err}") from None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def results_table(results: dict[str, Any]):
    """One row per task: mode, documents, every headline metric, seconds."""
    from rich.table import Table

    model = results.get("model", {})
    table = Table(title=f"{model.get('model', '?')} ({model.get('backend', '?')})")
    for column in ("task", "mode", "docs", "metrics", "seconds"):
        table.add_column(column, justify="right" if column in ("docs", "seconds") else "left")
    for name, task in results["tasks"].items():
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in task["metrics"].items())
        table.add_row(name, task["mode"], str(task["n_docs"]), metrics, f"{task['seconds']['total']:.1f}")
    return table


def comparison_rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str, list[Any]]]]:
    """Run labels, and (task, metric, value per run) for every metric any run has."""
    labels = []
    for i, run in enumerate(runs):
        model = run.get("model", {})
        labels.append(f"{i + 1}: {Path(str(model.get('model', '?'))).name} ({model.get('backend', '?')})")
    keys: list[tuple[str, str]] = []
    for run in runs:
        for task, summary in run["tasks"].items():
            for metric in summary["metrics"]:
                if (task, metric) not in keys:
                    keys.append((task, metric))
    rows = [(task, metric, [run["tasks"].get(task, {}).get("metrics", {}).get(metric) for run in runs])
            for task, metric in keys]
    return labels, rows


def comparison_table(runs: list[dict[str, Any]]):
    """Several runs side by side, one row per task and metric."""
    from rich.table import Table

    labels, rows = comparison_rows(runs)
    table = Table(title="comparison")
    table.add_column("task")
    table.add_column("metric")
    for label in labels:
        table.add_column(label, justify="right")
    for task, metric, values in rows:
        table.add_row(task, metric, *(_fmt(v) for v in values))
    return table


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _korean_font() -> None:
    """Use a font with Hangul if the system has one (labels stay readable either way)."""
    from matplotlib import font_manager, rcParams

    rcParams["axes.unicode_minus"] = False  # Hangul fonts often lack U+2212
    names = {f.name for f in font_manager.fontManager.ttflist}
    for candidate in ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "UnDotum", "Baekmuk Gulim"):
        if candidate in names:
            rcParams["font.family"] = candidate
            return


def _bar_figure(title: str, labels: list[str], series: dict[str, list[float | None]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(labels) * max(1, len(series))), 3.4))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [x + i * width for x in range(len(labels))]
        ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))], labels, rotation=35, ha="right")
    ax.set_title(title)
    ax.axhline(0, color="black", linewidth=0.6)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = _png(fig)
    plt.close(fig)
    return png


def _can_plot() -> bool:
    """Whether matplotlib (the ``plots`` extra) is installed; reports leave their plots out otherwise."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def task_plots(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(caption, base64 PNG): headline scores per task, and each task's breakdowns (none without matplotlib)."""
    if not _can_plot():
        return []
    _korean_font()
    plots = []
    labels, values = [], []
    for name, task in results["tasks"].items():
        for metric, value in task["metrics"].items():
            labels.append(f"{name}:{metric}")
            values.append(value)
    if labels:
        plots.append(("Scores per task", _bar_figure("scores", labels, {"run": values})))
    for name, task in results["tasks"].items():
        for field, groups in task.get("breakdown", {}).items():
            metrics = [m for m in task["metrics"] if m != "out_of_choice_rate"]
            series = {m: [groups[g].get(m) for g in groups] for m in metrics}
            plots.append((f"{name} by {field}", _bar_figure(f"{name} by {field}", list(groups), series)))
    return plots


def _html_page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html lang='ko'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{body}</body></html>")


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """report.html: run facts, a table of every metric, plots per task and category."""
    model = results.get("model", {})
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(task['mode'])}</td><td>{task['n_docs']}</td>"
        f"<td>{html.escape(task['version'])}</td><td>"
        + "<br>".join(f"{html.escape(k)} = {_fmt(v)}" for k, v in task["metrics"].items())
        + f"</td><td>{task['seconds']['total']:.1f}</td></tr>"
        for name, task in results["tasks"].items()
    )
    body = (
        f"<h1>Nexus-K evaluation</h1><p>model <b>{html.escape(str(model.get('model')))}</b> via "
        f"{html.escape(str(model.get('backend')))}, {html.escape(results.get('created', ''))}, "
        f"{results['seconds'].get('total', 0):.1f} s</p>"
        "<table><tr><th>task</th><th>mode</th><th>docs</th><th>version</th><th>metrics</th><th>s</th></tr>"
        f"{rows}</table>"
    )
    for caption, png in task_plots(results):
        body += f"<h3>{html.escape(caption)}</h3><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>"
    path = out_dir / REPORT_FILE
    path.write_text(_html_page("Nexus-K evaluation", body), encoding="utf-8")
    return path


def write_comparison(runs: list[dict[str, Any]], out_dir: Path) -> Path:
    """compare.html and compare.json: the runs' metrics side by side, with one grouped bar plot."""
    labels, rows = comparison_rows(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(
        {"runs": labels, "rows": [{"task": t, "metric": m, "values": v} for t, m, v in rows]},
        ensure_ascii=False, indent=2), encoding="utf-8")
    image = ""
    if _can_plot():
        _korean_font()
        png = _bar_figure("comparison", [f"{t}:{m}" for t, m, _ in rows],
                          {label: [v[i] for _, _, v in rows] for i, label in enumerate(labels)})
        image = f"<img alt='comparison' src='data:image/png;base64,{png}'>"
    header = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    body_rows = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{html.escape(m)}</td>" + "".join(f"<td>{_fmt(x)}</td>" for x in v)
        + "</tr>" for t, m, v in rows)
    body = (f"<h1>Nexus-K comparison</h1><table><tr><th>task</th><th>metric</th>{header}</tr>{body_rows}</table>"
            + image)
    path = out_dir / "compare.html"
    path.write_text(_html_page("Nexus-K comparison", body), encoding="utf-8")
    return path
