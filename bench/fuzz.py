"""Schemathesis over the real server's ``/openapi.json``: no 5xx, no response that breaks the schema.

``python bench/fuzz.py`` starts ``nexus-k serve --engine hf`` on the tiny model (offline) with an API key,
then runs ``schemathesis run`` (examples, coverage and fuzzing phases; bounded examples per operation
and a time budget) with that key, and a second, shorter run without it (every operation but /health
must answer 401, never 5xx). Writes ``bench/results/fuzz.json`` with the counts and any failures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.load import start_server  # noqa: E402


@dataclass
class FuzzConfig:
    """What the fuzz run does."""

    max_examples: int = 25
    """Most generated cases per operation and phase."""
    max_time_s: int = 300
    """Time budget of the keyed run."""
    checks: str = "not_a_server_error,response_schema_conformance,content_type_conformance"
    """Schemathesis checks that must all pass."""
    max_model_len: int = 256
    seed: int = 1


def run_schemathesis(base: str, cfg: FuzzConfig, report: Path, key: str | None, max_time_s: int) -> dict:
    """One schemathesis run; its summary from the JSON report plus the CLI's exit status."""
    cmd = ["schemathesis", "run", base + "/openapi.json", "--checks", cfg.checks, "--max-examples",
           str(cfg.max_examples), "--max-time", str(max_time_s), "--seed", str(cfg.seed), "--workers", "2",
           "--request-timeout", "120", "--phases", "examples,coverage,fuzzing", "--no-shrink",
           "--report", "json", "--report-json-path", str(report), "--wait-for-schema", "60"]
    if key:
        cmd += ["--header", f"Authorization: Bearer {key}"]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    summary: dict = {"exit_status": done.returncode, "elapsed_s": round(time.monotonic() - started, 1),
                     "output_tail": done.stdout[-3000:].splitlines()[-25:]}
    if report.is_file():
        summary["report"] = _summarise(json.loads(report.read_text()))
    return summary


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

    from serving.auth import KeyStore

    with tempfile.TemporaryDirectory(prefix="nexus-k-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        server = start_server(tmp, cfg.max_model_len)
        try:
            key = KeyStore(server.database_url).create("fuzz", rpm=10**6, token_quota=10**12)
            keyed = run_schemathesis(server.base, cfg, tmp / "keyed.json", key, cfg.max_time_s)
            anonymous = run_schemathesis(server.base, cfg, tmp / "anonymous.json", None, max(30, cfg.max_time_s // 5))
            log_lines = server.log.read_text(errors="replace").splitlines()
            tracebacks = sum("Traceback" in line for line in log_lines)
        finally:
            stop = server.stop()
    report = {"config": asdict(cfg), "keyed": keyed, "without_key": anonymous,
              "server_tracebacks": tracebacks, "server_stop": stop}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    sys.exit(0 if keyed["exit_status"] == 0 and anonymous["exit_status"] == 0 else 1)


if __name__ == "__main__":
    main()
