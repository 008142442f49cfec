"""Pretraining text: reading documents from files or `datasets`, a held-out split, and packing tokens
into fixed-length sequences (in memory, or streamed for corpora that don't fit)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nexus_k.core.errors import UserError
from training.batches import IndexedBatchSource, stack_collate
from training.config import DataConfig, LoopConfig
from training.distributed import DistInfo
from training.loop import EvalSet

log = logging.getLogger(__name__)

#: Without explicit held-out sources, every HELDOUT_STRIDE-th document is held out (up to heldout_docs).
HELDOUT_STRIDE = 50
_TOKENIZE_CHUNK = 2000


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def _file_documents(path: Path, text_field: str) -> Iterator[str]:
    kind = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
    with _open_text(path) as fh:
        if kind in (".jsonl", ".json"):
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        value = json.loads(line).get(text_field)
                    except (json.JSONDecodeError, AttributeError) as err:
                        raise UserError(f"{path}:{number}: not a JSON object ({err})") from err
                    if isinstance(value, str):
                        yield value
        elif kind in (".tsv", ".csv"):
            reader = csv.DictReader(fh, delimiter="\t" if kind == ".tsv" else ",")
            if text_field not in (reader.fieldnames or []):
                raise UserError(f"{path}: no column {text_field!r} (columns: {reader.fieldnames}); set data.text_field")
            for row in reader:
                if row.get(text_field):
                    yield row[text_field]
        else:
            for line in fh:
                if line.strip():
                    yield line.rstrip("\n")


def _hf_documents(spec: str, text_field: str) -> Iterator[str]:
    parts = spec[3:].split(":")
    if len(parts) == 2:
        name, config, split = parts[0], None, parts[1]
    elif len(parts) == 3:
        name, config, split = parts
    else:
        raise UserError(f"dataset source {spec!r} must look like hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as err:  # datasets raises many types for missing/offline corpora
        raise UserError(f"cannot open dataset {spec!r}: {str(err).splitlines()[0]}") from err
    for row in ds:
        value = row.get(text_field)
        if isinstance(value, str):
            yield value


def iter_documents(sources: list[str], text_field: str, min_chars: int = 1) -> Iterator[str]:
    """Documents from every source in order; folders contribute their files in name order."""
    for source in sources:
        if source.startswith("hf:"):
            docs = _hf_documents(source, text_field)
        else:
            path = Path(source).expanduser()
            if not path.exists():
                raise UserError(f"data source not found: {source}")
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            docs = (doc for f in files for doc in _file_documents(f, text_field))
        for doc in docs:
            doc = doc.strip()
            if len(doc) >= min_chars:
                yield doc


def _is_heldout(index: int, cfg: DataConfig) -> bool:
    return index % HELDOUT_STRIDE == HELDOUT_STRIDE - 1 and index // HELDOUT_STRIDE < cfg.heldout_docs


def heldout_documents(cfg: DataConfig) -> list[str]:
    """Held-out documents: the ``heldout`` sources, or every HELDOUT_STRIDE-th training document."""
    if cfg.heldout:
        return list(iter_documents(cfg.heldout, cfg.text_field, cfg.min_chars))[: cfg.heldout_docs or None]
    held = []
    for i, doc in enumerate(iter_documents(cfg.train, cfg.text_field, cfg.min_chars)):
        if len(held) >= cfg.heldout_docs:
            break
        if _is_heldout(i, cfg):
            held.append(doc)
    return held


def training_documents(cfg: DataConfig) -> Iterator[str]:
    """Training documents as a lazy stream (held-out ones left out, at most ``max_docs``)."""
    docs = iter_documents(cfg.train, cfg.text_field, cfg.min_chars)
    if not cfg.heldout:
        docs = (doc for i, doc in enumerate(docs) if not _is_heldout(i, cfg))
    if cfg.max_docs is not None:
        docs = (doc for i, doc in enumerate(docs) if i < cfg.max_docs)
    return docs


def tokenize_stream(tokenizer: Any, docs: Iterator[str]) -> Iterator[list[int]]:
    """Token ids of each document followed by the end-of-sequence token, tokenized in chunks."""
    eos = tokenizer.eos_token_id
    chunk: list[str] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) >= _TOKENIZE_CHUNK:
            yield from ([*ids, eos] for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"])
            chunk = []
    if chunk:
        yield from ([*ids, eos] for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"])


def heldout_eval_set(tokenizer: Any, docs: list[str], seq_len: int, micro_batch_size: int) -> EvalSet | None:
    """Held-out documents packed like training data (last sequence padded with ignored labels).

    Characters count each document plus one for its end-of-sequence separator, as a newline would.
    """
    if not docs:
        return None
    stream = np.fromiter((t for ids in tokenize_stream(tokenizer, iter(docs)) for t in ids), dtype=np.int64)
    pad = (-len(stream)) % seq_len
    ids = torch.from_numpy(np.concatenate([stream, np.zeros(pad, dtype=np.int64)])).view(-1, seq_len)
    labels = ids.clone()
    if pad:
        labels[-1, seq_len - pad :] = -100
    batches = [
        {"input_ids": ids[i : i + micro_batch_size], "labels": labels[i : i + micro_batch_size]}
        for i in range(0, len(ids), micro_batch_size)
    ]
    return EvalSet(batches=batches, characters=sum(len(d) + 1 for d in docs))


class StreamingPackedSource:
    """Packed sequences from a lazily read corpus with a seeded shuffle buffer; resuming replays the
    stream up to the saved position, so the data after a resume is exactly what it would have been."""

    def __init__(self, tokenizer: Any, cfg: DataConfig, loop: LoopConfig, info: DistInfo) -> None:
        self.tokenizer, self.cfg, self.info = tokenizer, cfg, info
        self.micro, self.accum = loop.micro_batch_size, loop.grad_accum_steps
        self.seed = loop.seed
        self.global_batch = self.micro * self.accum * info.world_size
        self._stream = self._sequences()
        self._position = 0

    def _shuffled_docs(self, epoch: int) -> Iterator[str]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        buffer: list[str] = []
        for doc in training_documents(self.cfg):
            buffer.append(doc)
            if len(buffer) >= self.cfg.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer

    def _sequences(self) -> Iterator[torch.Tensor]:
        seq_len, epoch, carry = self.cfg.seq_len, 0, []
        while True:
            produced = 0
            for ids in tokenize_stream(self.tokenizer, self._shuffled_docs(epoch)):
                carry.extend(ids)
                while len(carry) >= seq_len:
                    yield torch.tensor(carry[:seq_len], dtype=torch.long)
                    carry = carry[seq_len:]
                    produced += 1
            if produced == 0 and epoch == 0:
                raise UserError("the training data is too small for one sequence of data.seq_len tokens")
            epoch += 1

    def _take(self, count: int) -> list[torch.Tensor]:
        self._position += count
        return [next(self._stream) for _ in range(count)]

    def micro_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        """This process's slice of the next global batch (steps must be asked for in order)."""
        if step * self.global_batch != self._position:
            raise RuntimeError(f"streaming source asked for step {step} out of order")
        seqs = self._take(self.global_batch)
        out = []
        for m in range(self.accum):
            start = (m * self.info.world_size + self.info.rank) * self.micro
            out.append(stack_collate(seqs[start : start + self.micro]))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Sequences consumed so far."""
        return {"position": self._position, "global_batch": self.global_batch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        """Replay the stream up to the saved position."""
        if state.get("global_batch") != self.global_batch or state.get("seed") != self.seed:
            raise UserError("checkpoint was made with a different batch shape or seed; use a fresh output folder")
        for _ in range(state["position"]):
            next(self._stream)
        self._position = state["position"]


def build_pretrain_data(
    tokenizer: Any, cfg: DataConfig, loop: LoopConfig, info: DistInfo
) -> tuple[Any, EvalSet | None, dict[str, Any]]:
    """The training batch source, the held-out set and data statistics for the report."""
    if not cfg.train:
        raise UserError("data.train lists no sources")
    held = heldout_documents(cfg)
    if cfg.streaming:
        source = StreamingPackedSource(tokenizer, cfg, loop, info)
        stats: dict[str, Any] = {"mode": "streaming", "heldout_documents": len(held)}
    else:
        docs = 0
        chunks: list[np.ndarray] = []
        for ids in tokenize_stream(tokenizer, training_documents(cfg)):
            chunks.append(np.asarray(ids, dtype=np.int32))
            docs += 1
        stream = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
        n_seq = len(stream) // cfg.seq_len
        if n_seq == 0:
            raise UserError("the training data is too small for one sequence of data.seq_len tokens")
        seqs = torch.from_numpy(stream[: n_seq * cfg.seq_len].astype(np.int64)).view(n_seq, cfg.seq_len)
        source = IndexedBatchSource(seqs, stack_collate, loop.micro_batch_size, loop.grad_accum_steps, info, loop.seed)
        stats = {
            "mode": "in-memory",
            "train_documents": docs,
            "train_tokens": len(stream),
            "train_sequences": n_seq,
            "heldout_documents": len(held),
        }
    eval_set = heldout_eval_set(tokenizer, held, cfg.seq_len, loop.micro_batch_size)
    if eval_set is not None:
        stats["heldout_characters"] = eval_set.characters
    return source, eval_set, stats
