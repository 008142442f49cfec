"""The demo model's SHA256 checks, GGUF assembly, one-time atomic conversion and Gemma chat template."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pytest

from nexus_k.core.errors import UserError
from serving import demo_model

HANGUL = re.compile(r"[가-힣]")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_verify_sha256_accepts_the_right_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"gemma" * 1000)
    demo_model.verify_sha256(path, _digest(b"gemma" * 1000).upper())
    assert demo_model.sha256_file(path) == _digest(b"gemma" * 1000)


def test_verify_sha256_refuses_a_tampered_copy(tmp_path: Path) -> None:
    original = b"gemma" * 1000
    path = tmp_path / "weights.bin"
    path.write_bytes(original[:-1] + b"X")
    with pytest.raises(UserError, match=r"SHA256 mismatch .* tampered with, refusing to use it") as err:
        demo_model.verify_sha256(path, _digest(original))
    assert _digest(original) in str(err.value)
    assert "\n" not in str(err.value)


def test_parse_sha256sums_reads_both_sha256sum_styles() -> None:
    text = f"{'A' * 64}  model.gguf\n{'b' * 64} *other.bin\n\nnot a line\n"
    assert demo_model.parse_sha256sums(text) == {"model.gguf": "a" * 64, "other.bin": "b" * 64}


def test_missing_package_tells_the_user_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == demo_model.GGUF_PACKAGE else real_find_spec(name, *a),
    )
    with pytest.raises(UserError, match=re.escape("pip install 'nexus-k[demo]'")):
        demo_model.gguf_path()


def test_a_package_shipping_an_unknown_digest_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{'0' * 64}  {demo_model.GGUF_FILE_NAME}\n")
    monkeypatch.setattr(demo_model, "_require_package", lambda: None)
    monkeypatch.setattr(demo_model, "_package_data", lambda name: tmp_path / name)
    with pytest.raises(UserError, match="refusing an unknown build"):
        demo_model.expected_gguf_sha256()


@pytest.mark.skipif(importlib.util.find_spec(demo_model.GGUF_PACKAGE) is None, reason="demo extra not installed")
def test_installed_package_ships_the_pinned_digest() -> None:
    assert demo_model.expected_gguf_sha256() == demo_model.PINNED_GGUF_SHA256


@pytest.fixture
def fake_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Three small chunk files standing in for the packages; the expected digest is of their concatenation."""
    chunks = []
    for i, payload in enumerate([b"GGUF" + b"a" * 3000, b"b" * 2000, b"c" * 10]):
        chunk = tmp_path / f"part{i:02d}"
        chunk.write_bytes(payload)
        chunks.append(chunk)
    expected = _digest(b"".join(c.read_bytes() for c in chunks))
    monkeypatch.setattr(demo_model, "expected_gguf_sha256", lambda: expected)
    monkeypatch.setattr(demo_model, "_chunk_paths", lambda: chunks)
    return chunks


def test_gguf_is_assembled_once_and_reused(cache: Path, fake_chunks: list[Path], monkeypatch) -> None:
    path = demo_model.gguf_path()
    assert path.read_bytes() == b"".join(c.read_bytes() for c in fake_chunks)
    assert path.parent == cache / "models" / "gguf"
    monkeypatch.setattr(demo_model, "_chunk_paths", lambda: pytest.fail("re-assembled a verified file"))
    assert demo_model.gguf_path() == path


def test_tampered_chunks_are_refused_and_leave_nothing_behind(cache: Path, fake_chunks: list[Path]) -> None:
    fake_chunks[1].write_bytes(b"b" * 1999 + b"!")
    with pytest.raises(UserError, match="SHA256 mismatch"):
        demo_model.gguf_path()
    assert list((cache / "models" / "gguf").iterdir()) == []


def test_a_tampered_cached_gguf_is_rebuilt_from_the_packages(cache: Path, fake_chunks: list[Path]) -> None:
    path = demo_model.gguf_path()
    path.write_bytes(b"evil")
    assert demo_model.gguf_path().read_bytes() == b"".join(c.read_bytes() for c in fake_chunks)


def _fake_record(source_sha256: str, vocabulary: dict | None = None) -> demo_model.ConversionRecord:
    return demo_model.ConversionRecord(
        source_file=demo_model.GGUF_FILE_NAME, source_sha256=source_sha256, source_package="fake", dtype="bfloat16",
        chat_template="nexus-k gemma", eos_token_ids=[1, 106], transformers_version="x", seconds=0.0,
        version=demo_model.CONVERSION_VERSION, vocabulary=vocabulary)


def _fake_converter(calls: list[Path], fail: bool = False):
    def convert(gguf: Path, out_dir: Path, source_sha256: str, step) -> demo_model.ConversionRecord:
        calls.append(out_dir)
        with step("fake conversion"):
            (out_dir / "config.json").write_text("{}")
            if fail:
                raise RuntimeError("conversion crashed")
            record = _fake_record(source_sha256)
            (out_dir / demo_model.MARKER_FILE).write_text(json.dumps(record.__dict__))
        return record

    return convert


def _fake_trimmer(calls: list[Path]):
    def trim(full_dir: Path, out_dir: Path, step) -> demo_model.ConversionRecord:
        calls.append(out_dir)
        with step("fake trim"):
            (out_dir / "config.json").write_text('{"trimmed": true}')
            vocabulary = {"token_ids_sha256": demo_model.sha256_file(demo_model.KEPT_VOCAB_FILE)}
            record = _fake_record(demo_model.read_conversion_record(full_dir).source_sha256, vocabulary)
            (out_dir / demo_model.MARKER_FILE).write_text(json.dumps(record.__dict__))
        return record

    return trim


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Folders the (fake) vocabulary trim wrote."""
    calls: list[Path] = []
    monkeypatch.setattr(demo_model, "write_trimmed_folder", _fake_trimmer(calls))
    return calls


def test_conversion_runs_once_then_is_reused(cache: Path, fake_chunks, trims, monkeypatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(demo_model, "write_hf_folder", _fake_converter(calls))
    first = demo_model.prepare_demo_model(progress=False)
    second = demo_model.prepare_demo_model(progress=True)
    assert first == second == cache / "models" / demo_model.DEMO_BASE_NAME
    assert len(calls) == 1 and len(trims) == 1
    assert calls[0] != first, "conversion must write to a staging folder, not the final one"
    assert json.loads((first / "config.json").read_text()) == {"trimmed": True}
    assert demo_model.read_conversion_record(first).source_sha256 == demo_model.expected_gguf_sha256()
    full = demo_model.prepare_demo_model(progress=False, full_vocab=True)
    assert full == cache / "models" / demo_model.DEMO_FULL_NAME and len(calls) == 1
    assert json.loads((full / "config.json").read_text()) == {}
    assert [p.name for p in (cache / "models").iterdir() if p.name.startswith(".")] == []


def test_a_failed_conversion_leaves_no_half_written_model(cache: Path, fake_chunks, trims, monkeypatch) -> None:
    monkeypatch.setattr(demo_model, "write_hf_folder", _fake_converter([], fail=True))
    with pytest.raises(RuntimeError, match="conversion crashed"):
        demo_model.prepare_demo_model(progress=False)
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["gguf"]
    assert trims == []


def test_an_incomplete_or_outdated_folder_is_converted_again(cache: Path, fake_chunks, trims, monkeypatch) -> None:
    target = cache / "models" / demo_model.DEMO_BASE_NAME
    target.mkdir(parents=True)
    (target / "leftover.bin").write_bytes(b"half")
    calls: list[Path] = []
    monkeypatch.setattr(demo_model, "write_hf_folder", _fake_converter(calls))
    demo_model.prepare_demo_model(progress=False)
    assert len(calls) == 1 and len(trims) == 1
    assert not (target / "leftover.bin").exists()
    record = json.loads((target / demo_model.MARKER_FILE).read_text())
    record["source_sha256"] = "0" * 64
    (target / demo_model.MARKER_FILE).write_text(json.dumps(record))
    demo_model.prepare_demo_model(progress=False)
    assert len(calls) == 1 and len(trims) == 2, "the untrimmed folder was still good: only the trim runs again"


def test_a_cache_from_before_the_trim_is_converted_again(cache: Path, fake_chunks, trims, monkeypatch) -> None:
    """Folders written before the vocabulary trim have no version (1): both are redone."""
    calls: list[Path] = []
    monkeypatch.setattr(demo_model, "write_hf_folder", _fake_converter(calls))
    target = demo_model.prepare_demo_model(progress=False)
    for folder in (target, cache / "models" / demo_model.DEMO_FULL_NAME):
        record = json.loads((folder / demo_model.MARKER_FILE).read_text())
        del record["version"], record["vocabulary"]
        (folder / demo_model.MARKER_FILE).write_text(json.dumps(record))
    demo_model.prepare_demo_model(progress=False)
    assert len(calls) == 2 and len(trims) == 2


def test_the_bundled_vocabulary_records_its_recipe() -> None:
    data = json.loads(demo_model.KEPT_VOCAB_FILE.read_text(encoding="utf-8"))
    ids = data["used_token_ids"]
    assert ids == sorted(set(ids)) and 15_000 < len(ids) < data["vocab_size"] == 262_144
    assert len(data["vocab_sha256"]) == 64
    files = [source["file"] for source in data["recipe"]["sources"]]
    assert "nsmc/nsmc_raw_reviews.tsv.gz" in files and "kobest/BoolQ/train.tsv" in files
    assert any(name.startswith("/usr/share/common-licenses/") for name in files)
    assert all(len(source["sha256"]) == 64 and source["texts"] > 0 for source in data["recipe"]["sources"])


def _render(tokenizer, messages, generation_prompt=True) -> str:
    return tokenizer.apply_chat_template(
        messages,
        chat_template=demo_model.GEMMA_CHAT_TEMPLATE,
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )


@pytest.fixture(scope="module")
def word_tokenizer():
    """A minimal fast tokenizer (word-level, no training) that can render chat templates."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "<bos>": 1}, unk_token="<unk>")),
        bos_token="<bos>",
        unk_token="<unk>",
    )


def test_gemma_chat_template_folds_the_system_prompt_into_the_first_user_turn(word_tokenizer) -> None:
    tokenizer = word_tokenizer
    text = _render(
        tokenizer,
        [
            {"role": "system", "content": "존댓말로 답하세요."},
            {"role": "user", "content": "안녕하세요"},
            {"role": "assistant", "content": "반갑습니다."},
            {"role": "user", "content": [{"type": "text", "text": "날씨 어때요?"}]},
        ],
    )
    assert text == (
        f"{tokenizer.bos_token}<start_of_turn>user\n존댓말로 답하세요.\n\n안녕하세요<end_of_turn>\n"
        "<start_of_turn>model\n반갑습니다.<end_of_turn>\n"
        "<start_of_turn>user\n날씨 어때요?<end_of_turn>\n<start_of_turn>model\n"
    )
    plain = _render(tokenizer, [{"role": "user", "content": "안녕"}], generation_prompt=False)
    assert plain == f"{tokenizer.bos_token}<start_of_turn>user\n안녕<end_of_turn>\n"


def test_committed_adapter_is_small_and_complete() -> None:
    adapter = demo_model.demo_adapter_dir()
    if adapter is None:
        pytest.skip("no adapter committed yet")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    weights = adapter / "adapter_model.safetensors"
    assert weights.is_file() and weights.stat().st_size < 12 * 2**20
