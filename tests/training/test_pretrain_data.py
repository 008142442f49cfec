"""Pretraining data: file formats, the held-out split, packing, and step-addressed batches."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from nexus_k.core.errors import UserError
from training.batches import IndexedBatchSource, stack_collate
from training.config import DataConfig, LoopConfig
from training.data import StreamingPackedSource, heldout_documents, iter_documents, training_documents
from training.distributed import DistInfo


def test_readers_for_text_gzip_jsonl_tsv_and_folders(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("첫 문서\n\n둘째 문서\n", encoding="utf-8")
    with gzip.open(tmp_path / "d" / "b.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": "셋째"}, ensure_ascii=False) + "\n" + json.dumps({"other": 1}) + "\n")
    (tmp_path / "c.tsv").write_text("id\ttext\n1\t넷째 리뷰\n2\t\n", encoding="utf-8")
    docs = list(iter_documents([str(tmp_path / "d"), str(tmp_path / "c.tsv")], "text"))
    assert docs == ["첫 문서", "둘째 문서", "셋째", "넷째 리뷰"]
    with pytest.raises(UserError, match="no column 'review'"):
        list(iter_documents([str(tmp_path / "c.tsv")], "review"))
    with pytest.raises(UserError, match="not found"):
        list(iter_documents([str(tmp_path / "nope.txt")], "text"))


def test_heldout_documents_are_never_trained_on(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt"
    path.write_text("".join(f"문서 {i}\n" for i in range(300)), encoding="utf-8")
    cfg = DataConfig(train=[str(path)], heldout_docs=4)
    held, train = heldout_documents(cfg), list(training_documents(cfg))
    assert held == ["문서 49", "문서 99", "문서 149", "문서 199"]
    assert not set(held) & set(train) and len(train) == 296


def test_batches_of_two_processes_partition_the_single_process_batch() -> None:
    items = torch.arange(40 * 4).view(40, 4)
    single = IndexedBatchSource(items, stack_collate, 2, 2, DistInfo(), seed=3)
    ranks = [IndexedBatchSource(items, stack_collate, 2, 1, DistInfo(rank=r, world_size=2), seed=3) for r in (0, 1)]
    for step in (0, 1, 9, 10, 23):  # 23 crosses into the third epoch
        one = torch.cat([b["input_ids"] for b in single.micro_batches(step)])
        two = torch.cat([b["input_ids"] for src in ranks for b in src.micro_batches(step)])
        assert sorted(one[:, 0].tolist()) == sorted(two[:, 0].tolist())
    epoch0 = torch.cat([b["input_ids"] for s in range(10) for b in single.micro_batches(s)])
    assert sorted(epoch0[:, 0].tolist()) == list(range(0, 160, 4))


def test_streaming_source_resumes_at_the_same_sequence(tiny_model_dir: Path, corpus_file: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = DataConfig(train=[str(corpus_file)], seq_len=32, streaming=True, shuffle_buffer=16, heldout_docs=2)
    loop = LoopConfig(micro_batch_size=2, grad_accum_steps=2, seed=1)
    fresh = StreamingPackedSource(tok, cfg, loop, DistInfo())
    expected = [fresh.micro_batches(s) for s in range(6)]
    saved = StreamingPackedSource(tok, cfg, loop, DistInfo())
    for s in range(3):
        saved.micro_batches(s)
    resumed = StreamingPackedSource(tok, cfg, loop, DistInfo())
    resumed.load_state_dict(saved.state_dict(), 3)
    for s in range(3, 6):
        for got, want in zip(resumed.micro_batches(s), expected[s], strict=True):
            assert torch.equal(got["input_ids"], want["input_ids"])
