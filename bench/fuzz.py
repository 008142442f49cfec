"""Schemathesis over the real server's ``/openapi.json``: no 5xx, no response that breaks the schema.

``python -m bench.fuzz`` starts ``nexus-k serve --engine hf`` on the tiny model (offline; the same model also
served as the embedding model ``tiny-embed``, so that ``/v1/embeddings`` and ``/v1/rerank`` reach a pooling
engine) with an API key and fetches the server's OpenAPI schema with it. Every route in the schema is
fuzzed: chat, completions, the Responses API, embeddings and rerank, files, batches and vector stores.
Then three ``schemathesis run`` passes (examples, coverage and fuzzing phases, bounded examples per
operation, a time budget each):

* ``keyed``: the schema as served, with the key;
* ``keyed_model_pinned``: the same, but the request bodies' ``model`` fixed to the served names (the
  embedding model's for embeddings and rerank), so that generated cases get past the model lookup and
  reach the chat template and the engines;
* ``without_key``: the schema as served, no key: every operation but ``/health`` must answer 401 and
  none may fail with a 5xx.

Then the server gets SIGTERM. Writes ``bench/results/fuzz.json`` (counts, failures, schemathesis' pytest
reproducer of each failing case, the server log's distinct tracebacks, load averages).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.load import start_server

REPO = Path(__file__).resolve().parent.parent


@dataclass
class FuzzConfig:
    """What the fuzz run does."""

    max_examples: int = 25
    """Most generated cases per operation and phase."""
    max_time_s: int = 180
    """Time budget of the keyed run."""
    checks: str = "not_a_server_error,response_schema_conformance,content_type_conformance"
    """Schemathesis checks that must all pass."""
    max_model_len: int = 256
    seed: int = 1


def run_schemathesis(base: str, schema: Path, cfg: FuzzConfig, report: Path, key: str | None,
                     max_time_s: int) -> dict:
    """One schemathesis run over ``schema`` against ``base``; its summary and the CLI's exit status."""
    beside = Path(sys.executable).parent / "schemathesis"  # the venv's, even when it is not activated
    cmd = [str(beside) if beside.is_file() else "schemathesis", "run", str(schema), "--url", base,
           "--checks", cfg.checks, "--max-examples",
           str(cfg.max_examples), "--max-time", str(max_time_s), "--seed", str(cfg.seed), "--workers", "2",
           "--request-timeout", "120", "--phases", "examples,coverage,fuzzing", "--no-shrink",
           "--report", "json,pytest", "--report-json-path", str(report),
           "--report-pytest-path", str(report.with_suffix(".repro.py"))]
    if key:
        cmd += ["--header", f"Authorization: Bearer {key}"]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    summary: dict = {"exit_status": done.returncode, "elapsed_s": round(time.monotonic() - started, 1),
                     "output_tail": done.stdout[-4000:].splitlines()[-30:]}
    errors = re.search(r"^=+ ERRORS =+$(.*?)^=+ ", done.stdout, re.S | re.M)
    if errors:  # schemathesis' own errors (a case it could not generate or send), which the tail leaves out
        summary["errors_section"] = errors.group(1).strip()[:6000].splitlines()
    generated = re.search(r"(\d+) generated", done.stdout)
    summary["cases_generated"] = int(generated.group(1)) if generated else None
    if report.is_file():
        summary["report"] = _summarise(json.loads(report.read_text()))
    reproducer = report.with_suffix(".repro.py")
    if done.returncode != 0 and reproducer.is_file():
        # Schemathesis writes a pytest file that replays each failing case: kept so a failure can be reproduced.
        summary["reproducer"] = reproducer.read_text(errors="replace")[:20_000]
    return summary


def server_tracebacks(log_lines: list[str], keep: int = 5) -> list[dict]:
    """The server log's distinct tracebacks (by their last line), with how often each occurred."""
    seen: dict[str, dict] = {}
    for i, line in enumerate(log_lines):
        if not line.startswith("Traceback"):
            continue
        end = i + 1
        while end < len(log_lines) and (log_lines[end].startswith((" ", "\t")) or not log_lines[end].strip()):
            end += 1
        block = log_lines[max(0, i - 2):end + 1]  # the log line that announced it, the frames, the error
        last = log_lines[end] if end < len(log_lines) else block[-1]
        entry = seen.setdefault(last, {"error": last, "count": 0, "traceback": block[-40:]})
        entry["count"] += 1
    return sorted(seen.values(), key=lambda e: -e["count"])[:keep]


POOLING_REQUESTS = ("EmbeddingRequest", "RerankRequest")
"""Request bodies whose ``model`` is the embedding model's name."""


def fetch_schemas(base: str, key: str, served: str, out: Path, served_embedding: str) -> tuple[Path, Path]:
    """The server's OpenAPI schema as served, and a copy whose request ``model`` fields are pinned."""
    import httpx

    schema = httpx.get(base + "/openapi.json", headers={"Authorization": f"Bearer {key}"}, timeout=60).json()
    served_path = out / "openapi.json"
    served_path.write_text(json.dumps(schema))
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and "model" in component.get("properties", {}):
            name = served_embedding if name in POOLING_REQUESTS else served
            component["properties"]["model"] = {"type": "string", "enum": [name]}
    pinned_path = out / "openapi-model-pinned.json"
    pinned_path.write_text(json.dumps(schema))
    return served_path, pinned_path


def passed(run: dict) -> bool:
    """No check failed in this run. Schemathesis also exits non-zero on its own errors (a case it could not
    generate: a Hypothesis internal error, for example); those are kept in ``tool_errors`` and do not count
    against the server, whose failures are what the report's ``failures`` lists."""
    failures = (run.get("report") or {}).get("failures")
    if failures is None:  # no report written: only the exit status can tell
        return run["exit_status"] == 0
    return not failures and (run["exit_status"] == 0 or "errors_section" in run)


def _summarise(report: dict) -> dict:
    """The parts of schemathesis' JSON report worth keeping."""
    keep = {}
    for name in ("summary", "stats", "statistic", "totals", "failures", "errors"):
        if name in report:
            keep[name] = report[name]
    return keep or {"keys": sorted(report)}


def main() -> None:
    """Run the fuzzing and write ``bench/results/fuzz.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=FuzzConfig.max_examples)
    parser.add_argument("--max-time", type=int, default=FuzzConfig.max_time_s)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fuzz.json")
    args = parser.parse_args()
    cfg = FuzzConfig(max_examples=args.max_examples, max_time_s=args.max_time)

    from serving.security.auth import KeyStore

    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="nexus-k-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        embedding = {"NEXUS_K_EMBEDDING_MODEL": str(tmp / "tiny-model"),
                     "NEXUS_K_SERVED_EMBEDDING_MODEL_NAME": "tiny-embed"}
        server = start_server(tmp, cfg.max_model_len, env_extra=embedding)
        try:
            key = KeyStore(server.database_url).create("fuzz", rpm=10**6, token_quota=10**12)
            served, pinned = fetch_schemas(server.base, key, "tiny-ko", tmp, "tiny-embed")
            runs = {
                "keyed": run_schemathesis(server.base, served, cfg, tmp / "keyed.json", key, cfg.max_time_s),
                "keyed_model_pinned": run_schemathesis(server.base, pinned, cfg, tmp / "pinned.json", key,
                                                       cfg.max_time_s),
                "without_key": run_schemathesis(server.base, served, cfg, tmp / "anonymous.json", None,
                                                max(30, cfg.max_time_s // 5)),
            }
        finally:
            stop = server.stop()
        log_lines = server.log.read_text(errors="replace").splitlines()
        tracebacks = sum(line.startswith("Traceback") for line in log_lines)
        distinct = server_tracebacks(log_lines)
        five_xx = sum(' 500 ' in line or ' 502 ' in line or ' 503 ' in line for line in log_lines)
    report = {"config": asdict(cfg), "runs": runs, "server_tracebacks": tracebacks, "distinct_tracebacks": distinct,
              "server_5xx_in_access_log": five_xx, "server_stop": stop,
              "load_avg": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
              "server_failures": {name: (r.get("report") or {}).get("failures") for name, r in runs.items()},
              "tool_errors": {name: r["errors_section"] for name, r in runs.items() if "errors_section" in r},
              "checks_pass": all(passed(r) for r in runs.values()) and tracebacks == 0 and five_xx == 0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    sys.exit(0 if report["checks_pass"] else 1)


if __name__ == "__main__":
    main()
