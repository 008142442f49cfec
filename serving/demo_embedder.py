"""The bundled Korean embedding model: the demo base (Gemma 3 270M) with the embedding LoRA adapter trained
by ``nexus-k train embed`` merged in, plus its sentence-transformers pooling files, prepared once in the cache.
``make serve`` serves it as ``nexus-k-ko-embed`` beside the chat model (see docs/embeddings.md)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from nexus_k.core.paths import cache_dir
from serving.demo_model import prepare_demo_model, sha256_file

logger = logging.getLogger(__name__)

DEMO_EMBED_NAME = "nexus-k-ko-embed"
POOLING_FILES = ("modules.json", "1_Pooling", "2_Normalize", "sentence_bert_config.json",
                 "config_sentence_transformers.json", "nexus_k_embed.json")
RECORD = "nexus_k_merge.json"


def demo_embed_adapter_dir() -> Path | None:
    """The committed Korean embedding LoRA adapter, or None if absent."""
    folder = Path(__file__).resolve().parent / "adapters" / "ko_embed"
    return folder if (folder / "adapter_config.json").is_file() else None


def _merged_from(folder: Path) -> str | None:
    record = folder / RECORD
    return json.loads(record.read_text(encoding="utf-8")).get("adapter_sha256") if record.is_file() else None


def prepare_demo_embedder(progress: bool = True) -> Path | None:
    """The merged embedding model folder (merging once, keyed by the adapter's SHA256), or None without one."""
    adapter = demo_embed_adapter_dir()
    if adapter is None:
        return None
    target = cache_dir("models") / "gemma-3-270m-ko-embed"
    digest = sha256_file(adapter / "adapter_model.safetensors")
    if _merged_from(target) == digest:
        return target
    # The untrimmed base: pooling never reads the output layer the trim speeds up, and documents hold any text.
    base = prepare_demo_model(progress, full_vocab=True)
    import torch
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    if progress:
        logger.info("merging the Korean embedding adapter into %s (once)", base)
    staging = Path(tempfile.mkdtemp(prefix=".ko-embed-merging-", dir=target.parent))
    try:
        staging.chmod(0o755)
        model = PeftModel.from_pretrained(AutoModel.from_pretrained(base, dtype=torch.float32), adapter)
        model.merge_and_unload().save_pretrained(staging)
        AutoTokenizer.from_pretrained(base).save_pretrained(staging)
        for name in POOLING_FILES:
            source = adapter / name
            if source.is_dir():
                shutil.copytree(source, staging / name)
            elif source.is_file():
                shutil.copy2(source, staging / name)
        (staging / RECORD).write_text(json.dumps({"adapter_sha256": digest, "base": str(base)}), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
