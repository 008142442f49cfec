"""``nexus-k serve --trim-vocab``: the model trimmed once into a cache keyed by model and corpus, then served."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nexus_k.core.errors import UserError
from nexus_k.core.korean_text import bundled_korean_text
from serving import trim_cache
from serving.config import resolve_settings
from tokenizer.trim import TRIM_RECORD


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(bundled_korean_text().splitlines()[:20]), encoding="utf-8")
    return path


def test_the_setting_takes_comma_separated_files() -> None:
    settings = resolve_settings({"trim_vocab": "a.txt, b.jsonl"})
    assert settings.trim_vocab == ["a.txt", "b.jsonl"]
    assert resolve_settings({}).trim_vocab == []


def test_trims_once_into_a_cache_keyed_by_model_and_corpus(
    cache: Path, tiny_model_dir: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoTokenizer

    first = trim_cache.trimmed_model_dir(str(tiny_model_dir), [str(corpus)])
    assert first.parent == cache / "models" / trim_cache.TRIM_CACHE
    record = json.loads((first / TRIM_RECORD).read_text(encoding="utf-8"))
    assert record["cache_key"]["model"] == str(tiny_model_dir)
    assert len(AutoTokenizer.from_pretrained(first)) == record["report"]["vocab_after"] < record["report"][
        "vocab_before"]

    import tokenizer.trim

    monkeypatch.setattr(tokenizer.trim, "trim_model", lambda config: pytest.fail("trimmed again"))
    assert trim_cache.trimmed_model_dir(str(tiny_model_dir), [str(corpus)]) == first
    monkeypatch.undo()
    monkeypatch.setenv("NEXUS_K_CACHE_DIR", str(cache))
    corpus.write_text(corpus.read_text(encoding="utf-8") + "\n새로운 문장이 하나 더 있습니다.", encoding="utf-8")
    second = trim_cache.trimmed_model_dir(str(tiny_model_dir), [str(corpus)])
    assert second != first and (second / TRIM_RECORD).is_file()
    assert [p.name for p in second.parent.iterdir() if p.name.startswith(".")] == []


def test_bad_inputs_are_one_line_errors(tmp_path: Path, tiny_model_dir: Path, corpus: Path) -> None:
    with pytest.raises(UserError, match=r"corpus file not found: .*missing\.txt"):
        trim_cache.check_trim_inputs(str(tiny_model_dir), [str(tmp_path / "missing.txt")])
    no_tokenizer = tmp_path / "weights-only"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(UserError, match=r"has no tokenizer\.json"):
        trim_cache.check_trim_inputs(str(no_tokenizer), [str(corpus)])
    with pytest.raises(UserError, match="model folder not found"):
        trim_cache.check_trim_inputs(str(tmp_path / "nowhere"), [str(corpus)])


def test_serve_reports_a_missing_corpus_on_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    import subprocess

    from serving.launcher import serve_command

    missing = tmp_path / "missing.txt"
    done = subprocess.run(serve_command("--engine", "hf", "--model", str(tiny_model_dir), "--trim-vocab",
                                        str(missing)), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NEXUS_K_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: --trim-vocab: corpus file not found: {missing}"
    assert "Traceback" not in done.stderr


def test_serve_with_trim_vocab_serves_the_trimmed_model(tiny_model_dir: Path, corpus: Path, tmp_path: Path) -> None:
    """A live server (transformers engine) on the trimmed tiny model, under the model's own name."""
    import openai

    from tests.support import MODEL_NAME, start_server

    log = tmp_path / "server.log"
    server = start_server("hf", tiny_model_dir, log, args=["--trim-vocab", str(corpus)])
    try:
        client = openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0, timeout=300)
        assert [m.id for m in client.models.list().data] == [MODEL_NAME]
        reply = client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "안녕"}],
                                               max_tokens=4, temperature=0)
        assert reply.usage.completion_tokens >= 1
    finally:
        server.stop()
    trimmed = list((log.parent / "cache" / "models" / trim_cache.TRIM_CACHE).iterdir())
    assert len(trimmed) == 1 and (trimmed[0] / TRIM_RECORD).is_file()
    assert f"cached at {trimmed[0]}" in log.read_text()
