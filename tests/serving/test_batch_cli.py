"""``nexus-k batch run``: a Batch API input file processed offline on the tiny model (transformers), its
one-line errors for bad input, and ``--resume`` after a run that was cut mid-line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serving.batch_cli import finished_ids, iter_lines, read_input

CHAT = "/v1/chat/completions"


def write_input(path: Path, n: int, model: str = "tiny") -> Path:
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": CHAT,
              "body": {"model": model, "messages": [{"role": "user", "content": f"안녕 {i}"}], "max_tokens": 4}}
             for i in range(n)]
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path


def batch_run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nexus_k", "batch", "run", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n{oops\n')
    result = batch_run(bad, "--out", tmp_path / "out.jsonl")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {bad}: Line 2 is not valid JSON."]


def test_read_input_checks_every_line(tmp_path: Path) -> None:
    path = write_input(tmp_path / "in.jsonl", 3)
    assert read_input(path) == (CHAT, "tiny", {"r0", "r1", "r2"})
    assert [(n, c) for n, c, _ in iter_lines(path, {"r1"})] == [(1, "r0"), (3, "r2")]
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")
    with pytest.raises(Exception, match="Line 4: custom_id 'r0' is used twice"):
        read_input(path)


def test_finished_ids_drops_a_cut_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"custom_id": "a"}\n{"custom_id": "b"}\n{"custom_id": "c", "resp')
    assert finished_ids(out) == {"a", "b"}
    assert out.read_bytes() == b'{"custom_id": "a"}\n{"custom_id": "b"}\n'


def test_offline_run_and_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = write_input(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out.jsonl"
    first = batch_run(source, "--out", out, "--model", tiny_model_dir, "--engine", "hf")
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [f"r{i}" for i in range(6)]
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in rows)
    assert rows[0]["response"]["body"]["object"] == "chat.completion"
    assert batch_run(source, "--out", out).returncode == 2  # exists: --resume or another file

    kept = out.read_text().splitlines()[:2]
    out.write_text("\n".join(kept) + "\n" + kept[0][:40])  # as if killed while writing the third line
    again = batch_run(source, "--out", out, "--model", tiny_model_dir, "--engine", "hf", "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 already done" in again.stderr
    ids = [json.loads(line)["custom_id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == [f"r{i}" for i in range(6)]
