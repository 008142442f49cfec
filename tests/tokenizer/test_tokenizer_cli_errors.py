"""Bad input to every ``nexus-k tokenizer`` command: one ``error:`` line on stderr and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nexus_k import cli


def _cases(tmp: Path, model: Path, corpus: Path, tokenizer: Path) -> list[tuple[str, list[str]]]:
    bad_jsonl = tmp / "bad.jsonl"
    bad_jsonl.write_text('{"body": "필드 이름이 다르다"}\n', encoding="utf-8")
    missing = str(tmp / "missing.txt")
    out = str(tmp / "out")
    return [
        ("algorithm", ["train", "--corpus", str(corpus), "--out", out, "--algorithm", "wordpiece"]),
        ("vocab-size", ["train", "--corpus", str(corpus), "--out", out, "--vocab-size", "10"]),
        ("corpus file not found", ["train", "--corpus", missing, "--out", out]),
        ("no field 'text'", ["train", "--corpus", str(bad_jsonl), "--out", out]),
        ("tokenizer not found", ["stats", "--tokenizer", str(tmp / "nope"), "--text", str(corpus)]),
        ("GGUF file not found", ["stats", "--tokenizer", "no-such.gguf", "--text", str(corpus)]),
        ("corpus file not found", ["stats", "--tokenizer", str(tokenizer), "--text", missing]),
        ("model not found", ["trim", "--model", str(tmp / "nope"), "--corpus", str(corpus), "--out", out]),
        ("corpus file not found", ["trim", "--model", str(model), "--corpus", missing, "--out", out]),
        ("cannot load model", ["trim", "--model", str(tokenizer), "--corpus", str(corpus), "--out", out]),
        ("--num-new", ["extend", "--model", str(model), "--tokenizer", str(tokenizer), "--num-new", "0", "--out", out]),
        (
            "tokenizer not found",
            ["extend", "--model", str(model), "--tokenizer", str(tmp / "nope"), "--num-new", "3", "--out", out],
        ),
    ]


def test_bad_input_is_one_error_line_and_exit_2(
    tiny_model_dir: Path,
    korean_corpus: Path,
    trained_bpe: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for expected, args in _cases(tmp_path, tiny_model_dir, korean_corpus, trained_bpe):
        monkeypatch.setattr(sys, "argv", ["nexus-k", "tokenizer", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        stderr = capsys.readouterr().err
        assert exit_info.value.code == 2, (args, stderr)
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0], (args, stderr)
        assert "Traceback" not in stderr


def test_installed_command_exits_2_with_one_line(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "nexus_k.cli",
        "tokenizer",
        "train",
        "--corpus",
        str(tmp_path / "none.txt"),
        "--out",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: corpus file not found: {tmp_path / 'none.txt'}"]
