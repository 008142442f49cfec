"""``nexus-k serve --trim-vocab CORPUS,...``: serve a large-vocabulary model trimmed to what a corpus uses.

The trim (``tokenizer/trim.py``) runs once; its folder is cached under ``models/trimmed/`` keyed by the model
(resolved folder, its config, tokenizer and weight files, or hub name and revision) and by the corpus files'
content, so the same model and corpus are served from the cache on the next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from nexus_k.core.errors import UserError
from nexus_k.core.paths import cache_dir

logger = logging.getLogger(__name__)

TRIM_CACHE = "trimmed"
KEY_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def _hash_files(digest: hashlib._Hash, paths: list[Path]) -> None:
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)


def model_fingerprint(model: str, revision: str | None = None) -> str:
    """What identifies a model's weights and vocabulary: a folder's config, tokenizer and weight files
    (name, size, modification time; not their bytes, which would take long), or a hub name and revision."""
    folder = Path(model)
    digest = hashlib.sha256()
    if not folder.is_dir():
        digest.update(f"hub:{model}@{revision or 'main'}".encode())
        return digest.hexdigest()
    digest.update(str(folder.resolve()).encode())
    _hash_files(digest, [folder / name for name in KEY_FILES if (folder / name).is_file()])
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def corpus_fingerprint(corpus: list[str]) -> str:
    """SHA256 over the corpus files' contents, in order."""
    digest = hashlib.sha256()
    _hash_files(digest, [Path(spec) for spec in corpus])
    return digest.hexdigest()


def check_trim_inputs(model: str, corpus: list[str]) -> None:
    """One-line errors for what would make the trim fail: missing corpus files, a folder without tokenizer.json."""
    if not corpus:
        raise UserError("--trim-vocab: give one or more corpus files (comma-separated)")
    for spec in corpus:
        if not Path(spec).is_file():
            raise UserError(f"--trim-vocab: corpus file not found: {spec}")
    folder = Path(model)
    if folder.is_dir() and not (folder / "tokenizer.json").is_file():
        raise UserError(f"--trim-vocab: {model} has no tokenizer.json (only fast tokenizers can be trimmed)")
    if not folder.is_dir() and (folder.is_absolute() or model.startswith(".")):
        raise UserError(f"--trim-vocab: model folder not found: {model}")


def trimmed_model_dir(model: str, corpus: list[str], revision: str | None = None) -> Path:
    """The folder of ``model`` trimmed to the vocabulary of ``corpus``, trimming it once into the cache."""
    from tokenizer.trim import TRIM_RECORD, TrimConfig, trim_model

    check_trim_inputs(model, corpus)
    key = hashlib.sha256(f"{model_fingerprint(model, revision)}:{corpus_fingerprint(corpus)}".encode()).hexdigest()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name or model)[:60]
    target = cache_dir("models", TRIM_CACHE) / f"{name}-{key[:16]}"
    if (target / TRIM_RECORD).is_file():
        logger.info("--trim-vocab: serving the cached trim of %s at %s", model, target)
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-trimming-", dir=target.parent))
    try:
        staging.chmod(0o755)
        report = trim_model(TrimConfig(model, list(corpus), str(staging)))
        record = json.loads((staging / TRIM_RECORD).read_text(encoding="utf-8"))
        record["cache_key"] = {"model": model, "revision": revision, "key": key}
        (staging / TRIM_RECORD).write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
        if target.exists() and not (target / TRIM_RECORD).is_file():
            shutil.rmtree(target)  # a trim that was killed half-way
        try:
            os.replace(staging, target)  # fails when another process's finished trim arrived first: it stays
        except OSError:
            if not (target / TRIM_RECORD).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("--trim-vocab: trimmed %s to %d of %d tokens (parameters %d -> %d) at %s", model,
                report.vocab_after, report.vocab_before, report.parameters_before, report.parameters_after, target)
    return target
