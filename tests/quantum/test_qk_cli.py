"""``nexus-k quantum solve`` and ``schema`` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from nexus_k.cli import app
from nexus_k.core.errors import UserError
from quantum_kernels.schema import EXAMPLE_PROBLEM

runner = CliRunner()


def test_solve_qaoa_writes_result(tmp_path):
    problem = tmp_path / "qubo.json"
    problem.write_text(json.dumps(EXAMPLE_PROBLEM))
    out = tmp_path / "result.json"
    result = runner.invoke(app, ["quantum", "solve", str(problem), "--reps", "1", "--maxiter", "20",
                                 "--shots", "200", "--out", str(out)])
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text())
    assert body["best"]["feasible"] and body["num_variables"] == 4
    assert "energy -1.5" in result.output or body["best"]["energy"] >= -1.5


def test_solve_classical_reports_landscape(tmp_path):
    problem = tmp_path / "qubo.json"
    problem.write_text(json.dumps({"problem": EXAMPLE_PROBLEM}))
    result = runner.invoke(app, ["quantum", "solve", str(problem), "--solver", "exact"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["solution"]["bitstring"] == "1010" and body["landscape"]["num_feasible"] == 6


def test_schema_command_prints_request_schema():
    result = runner.invoke(app, ["quantum", "schema"])
    assert result.exit_code == 0
    assert "QUBOProblem" in json.loads(result.output)["$defs"]


def test_bad_input_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"num_variables": 3, "linear": [1, 2, 3, 4]}')
    result = runner.invoke(app, ["quantum", "solve", str(bad)])
    assert isinstance(result.exception, UserError) and "linear has 4 entries" in str(result.exception)


def test_missing_file_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nexus_k.cli", "quantum", "solve", str(tmp_path / "no.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no such file") and "Traceback" not in proc.stderr
