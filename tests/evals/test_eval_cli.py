"""``nexus-k eval`` end to end on the tiny model and the real data sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nexus_k.cli import app

runner = CliRunner()


def nexus_k(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexus_k", "eval", *args], capture_output=True, text=True,
                          timeout=300)


def test_list_shows_tasks() -> None:
    result = runner.invoke(app, ["eval", "list"])
    assert result.exit_code == 0
    for name in ("kobbq", "kosbi", "speech_level", "kobest_wic", "korquad_v1"):
        assert name in result.output


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = nexus_k("run", "--model", str(tiny_model_dir), "--tasks", "nope", "--out", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown task 'nope'")
    assert "Traceback" not in result.stderr
    result = nexus_k("run", "--model", str(tiny_model_dir), "--tasks", "nsmc", "--out", str(tmp_path),
                     "--data-dir", str(tmp_path / "missing"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = nexus_k("compare", str(tmp_path / "none"))
    assert result.returncode == 2 and "no results.json" in result.stderr
    result = nexus_k("run", "--model", str(tiny_model_dir), "--tasks", "nsmc", "--out", str(tmp_path),
                     "--adapter", str(tmp_path))
    assert result.returncode == 2 and "no adapter_config.json" in result.stderr
    result = nexus_k("run", "--model", "m", "--tasks", "nsmc", "--out", str(tmp_path), "--base-url",
                     "http://127.0.0.1:9/v1", "--adapter", str(tmp_path))
    assert result.returncode == 2 and "--adapter works with the hf backend" in result.stderr


@pytest.mark.slow
def test_run_writes_results_report_and_compares(tmp_path: Path, tiny_model_dir: Path, shared_data: Path) -> None:
    out = tmp_path / "run"
    args = ["eval", "run", "--model", str(tiny_model_dir), "--backend", "hf", "--dtype", "float32",
            "--tasks", "kobest_copa,kobbq,kosbi", "--limit", "2", "--out", str(out), "--data-dir", str(shared_data)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["model"]["backend"] == "hf"
    assert results["config"]["limit"] == 2
    copa = results["tasks"]["kobest_copa"]
    assert copa["n_docs"] == 2 and copa["n_requests"] == 4 and copa["version"] == "1.0"
    assert set(copa["metrics"]) == {"acc", "macro_f1"}
    kobbq = results["tasks"]["kobbq"]
    assert kobbq["n_docs"] == 2 * 15
    assert set(kobbq["metrics"]) == {"acc_a", "acc_d", "diff_bias_a", "diff_bias_d", "out_of_choice_rate"}
    assert kobbq["metrics"]["out_of_choice_rate"] == 0.0  # choice scoring always picks a choice
    assert set(kobbq["breakdown"]["prompt_id"]) == {"1", "2", "3", "4", "5"}
    assert set(results["tasks"]["kosbi"]["breakdown"]["category"])
    samples = [json.loads(line) for line in (out / "samples_kobbq.jsonl").open(encoding="utf-8")]
    assert len(samples) == 30 and all(len(s["lls"]) == 3 for s in samples)
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "kobbq by category" in report and "data:image/png;base64," in report
    # a second run in generative mode, then both side by side
    out2 = tmp_path / "run2"
    result = runner.invoke(app, ["eval", "run", "--model", str(tiny_model_dir), "--backend", "hf",
                                 "--tasks", "kobbq_generate", "--limit", "1", "--out", str(out2),
                                 "--data-dir", str(shared_data)])
    assert result.exit_code == 0, result.output
    generated = json.loads((out2 / "results.json").read_text(encoding="utf-8"))["tasks"]["kobbq_generate"]
    assert generated["mode"] == "generate" and generated["n_requests"] == 15
    result = runner.invoke(app, ["eval", "compare", str(out), str(out2), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "diff_bias_a" in result.output
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8"))
    assert len(compared["runs"]) == 2


def test_a_failing_endpoint_is_one_line_and_exit_2(tmp_path: Path, shared_data: Path) -> None:
    """An endpoint that answers 500 (e.g. its engine died) ends the run with one clear line, no traceback."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Broken(BaseHTTPRequestHandler):
        def _fail(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"error": {"message": "engine died", "type": "server_error"}}).encode()
            self.send_response(500)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _fail

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = nexus_k("run", "--backend", "openai", "--base-url", f"http://127.0.0.1:{server.server_port}/v1",
                         "--model", "m", "--tasks", "kobest_copa", "--limit", "2", "--out", str(tmp_path / "o"),
                         "--data-dir", str(shared_data), "--api-key", "k")
    finally:
        server.shutdown()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "answered 500" in result.stderr and "engine died" in result.stderr
