"""``nexus-k train embed`` end to end on the tiny random model: the loss goes down, the model learns the
pairs, and the folder loads with its pooling (our Embedder, AutoModel, the saved config)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.embed import Embedder
from training.embed_config import EmbedConfig
from training.embed_data import Pair, read_pairs, write_pairs
from training.embed_pooling import read_pooling_spec
from training.embed_train import run_embed

PAIRS = [
    ("서울의 인구는 얼마인가요?", "서울은 대한민국의 수도로 인구가 가장 많다."),
    ("부산에 있는 해수욕장", "해운대는 부산의 대표적인 해수욕장이다."),
    ("김치 담그는 방법", "김치는 배추를 소금에 절여 양념과 버무린다."),
    ("오늘 비가 오나요?", "기상청은 오후부터 비가 내린다고 예보했다."),
    ("고양이가 좋아하는 음식", "고양이는 생선과 닭고기를 즐겨 먹는다."),
    ("어제 축구 경기 결과", "우리 팀이 어제 경기에서 두 골 차로 이겼다."),
    ("기차표는 어디서 사나요?", "기차표는 역 매표소나 누리집에서 예매한다."),
    ("감기에 걸렸을 때", "감기에 걸리면 푹 쉬고 물을 많이 마셔야 한다."),
    ("한라산은 어디에 있나요?", "한라산은 제주도 한가운데 솟은 산이다."),
    ("여권 발급 기간", "여권은 신청 후 보통 일주일 안에 나온다."),
    ("도서관 운영 시간", "시립 도서관은 오전 아홉 시에 문을 연다."),
    ("전입신고 기한", "이사한 날부터 십사 일 안에 전입신고를 해야 한다."),
]


def write_pairs_file(path: Path, pairs=PAIRS) -> Path:
    write_pairs(path, [Pair(q, p) for q, p in pairs])
    return path


def write_sts(path: Path) -> Path:
    rows = [(q, p, 4.0 + (i % 2)) for i, (q, p) in enumerate(PAIRS)] + [
        (PAIRS[i][0], PAIRS[(i + 5) % len(PAIRS)][1], float(i % 2)) for i in range(len(PAIRS))
    ]
    lines = ["genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2"]
    lines += [f"g\tf\t2024\t{i:04d}\t{s:.3f}\t{a}\t{b}" for i, (a, b, s) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def top1_accuracy(embedder: Embedder) -> float:
    q = embedder.encode([q for q, _ in PAIRS])
    d = embedder.encode([p for _, p in PAIRS])
    return float(((q @ d.T).argmax(1) == np.arange(len(PAIRS))).mean())


def make_config(tiny_model_dir: Path, tmp_path: Path, **kw) -> EmbedConfig:
    defaults = dict(
        base=str(tiny_model_dir),
        data=str(write_pairs_file(tmp_path / "pairs.jsonl")),
        out=str(tmp_path / "out"),
        batch_size=6,
        max_steps=24,
        lr=3e-3,
        lora_r=8,
        hard_negatives=1,
        mine="bm25",
        precision="fp32",
        threads=1,
        max_length=32,
        max_seq_length=64,
    )
    return EmbedConfig(**{**defaults, **kw})


def test_lora_training_lowers_the_loss_and_learns_the_pairs(tiny_model_dir: Path, tmp_path: Path):
    torch.manual_seed(0)
    sts = str(write_sts(tmp_path / "sts.tsv"))
    cfg = make_config(tiny_model_dir, tmp_path, eval_sts=sts, eval_sts_max=None, mine="base", mine_rank_from=1)
    untrained = Embedder.load(str(tiny_model_dir))
    untrained.precision = "fp32"
    before = top1_accuracy(untrained)
    report = run_embed(cfg)
    out = Path(cfg.out)

    losses = [r["loss"] for r in report["history"]]
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    assert report["data"]["mined_negatives"] == len(PAIRS)  # one per pair, none given
    summary = report["summary"]
    assert summary["sts_pairs"] == 2 * len(PAIRS)
    assert summary["sts_spearman_after"] > summary["sts_spearman_before"]

    trained = Embedder.load(str(out))
    trained.precision = "fp32"
    assert top1_accuracy(trained) >= 0.9 > before

    spec = read_pooling_spec(out)
    assert spec is not None and spec.pooling == "mean" and spec.normalize and spec.dimension == 128
    assert spec.max_length == 64
    saved = json.loads((out / "embed_config.json").read_text())
    assert saved["lora"] is True and saved["pooling"] == "mean" and saved["batch_size"] == 6
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    assert (out / "loss_curve.png").stat().st_size > 5000
    assert "pooling" in (out / "README.md").read_text()

    # A bundled adapter ships without the base's tokenizer files: the base's tokenizer is used.
    vectors = trained.encode(["김치 담그는 방법"])
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (out / name).unlink(missing_ok=True)
    again = Embedder.load(str(out))
    again.precision = "fp32"
    np.testing.assert_allclose(again.encode(["김치 담그는 방법"]), vectors, atol=1e-6)


def test_folder_loads_with_automodel_and_its_pooling_config(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoModel, AutoTokenizer

    cfg = make_config(tiny_model_dir, tmp_path, max_steps=3, pooling="last", matryoshka_dims=[16, 32])
    run_embed(cfg)
    out = Path(cfg.out)
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 128 and pooling["pooling_mode_lasttoken"] is True
    assert not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_lasttoken")
    assert json.loads((out / "nexus_k_embed.json").read_text())["matryoshka_dimensions"] == [16, 32]

    # What a server does with only transformers: AutoModel (adapter included), last non-pad token, L2.
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModel.from_pretrained(out).eval()
    texts = ["한라산은 제주도에 있다.", "김치"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    last = batch["attention_mask"].sum(1) - 1
    manual = torch.nn.functional.normalize(hidden[torch.arange(2), last], dim=-1).numpy()
    ours = Embedder.load(str(out))
    ours.precision = "fp32"
    np.testing.assert_allclose(ours.encode(texts), manual, atol=1e-5)


def test_full_fine_tuning_saves_plain_weights(tiny_model_dir: Path, tmp_path: Path):
    from transformers import AutoModel

    options = dict(lora=False, max_steps=2, lr=1e-4, pooling="cls", hard_negatives=0, gradient_checkpointing=True)
    cfg = make_config(tiny_model_dir, tmp_path, **options)
    report = run_embed(cfg)
    out = Path(cfg.out)
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    assert report["settings"]["trainable_parameters"] == report["settings"]["total_parameters"]
    assert type(AutoModel.from_pretrained(out)).__name__ == "LlamaModel"
    assert read_pooling_spec(out).pooling == "cls"


def test_second_stage_continues_the_adapter_on_scored_pairs(tiny_model_dir: Path, tmp_path: Path):
    """Stage 1 learns the retrieval pairs; stage 2 continues that adapter on scored pairs (CoSENT) mixed with
    a replay, and ranks the scored pairs' similarities better than stage 1 did."""
    torch.manual_seed(0)
    first = make_config(tiny_model_dir, tmp_path, out=str(tmp_path / "stage1"), max_steps=12)
    run_embed(first)
    scored = [Pair(q, p, score=4.0 + (i % 2)) for i, (q, p) in enumerate(PAIRS)]
    scored += [Pair(PAIRS[i][0], PAIRS[(i + 5) % len(PAIRS)][1], score=float(i % 2)) for i in range(len(PAIRS))]
    data = tmp_path / "stage2.jsonl"
    write_pairs(data, scored + [Pair(q, p) for q, p in PAIRS[:6]])
    assert read_pairs(data)[: len(scored)] == scored
    sts = str(write_sts(tmp_path / "sts.tsv"))  # the same scored pairs as KorSTS-style TSV
    second = make_config(tiny_model_dir, tmp_path, data=str(data), out=str(tmp_path / "stage2"), max_steps=16,
                         init_adapter=first.out, eval_sts=sts, eval_sts_max=None, matryoshka_dims=[32])
    report = run_embed(second)
    summary = report["summary"]
    assert report["data"] == {**report["data"], "pairs": 6, "scored_pairs": 2 * len(PAIRS)}
    assert summary["sts_spearman_before"] < 0.99 and summary["sts_spearman_after"] > summary["sts_spearman_before"]
    assert summary["sts_spearman_after"] > 0.8
    assert "continuing the adapter" in (Path(second.out) / "README.md").read_text()
    saved = json.loads((Path(second.out) / "embed_config.json").read_text())
    assert saved["init_adapter"] == first.out and saved["lora_r"] == 8 and saved["lora_alpha"] == 16
    trained = Embedder.load(second.out)
    trained.precision = "fp32"
    assert top1_accuracy(trained) >= 0.75  # the replay keeps most of what stage 1 learned


def test_scored_pair_lines_are_checked(tmp_path: Path):
    from nexus_k.core.errors import UserError

    path = tmp_path / "scored.jsonl"
    lines = ['{"query": "q", "positive": "p", "score": 3.5}', '{"query": "q", "positive": "p", "score": "high"}',
             '{"query": "q", "positive": "p", "score": 1, "negatives": ["n"]}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"2 bad line\(s\): line 2: \"score\" must be a finite number.*line 3"):
        read_pairs(path)
    with pytest.raises(UserError, match="--init-adapter"):
        make_config(Path("x"), tmp_path, lora=False, init_adapter=str(tmp_path))
    with pytest.raises(UserError, match=r"no adapter_config\.json"):
        run_embed(make_config(Path("x"), tmp_path, init_adapter=str(tmp_path)))


def test_bad_pairs_are_reported_by_line(tmp_path: Path):
    from nexus_k.core.errors import UserError

    path = tmp_path / "bad.jsonl"
    lines = ['{"query": "q", "positive": "p"}', "", "not json", '{"query": "q"}']
    lines.append('{"query": "q", "positive": "p", "negatives": [1]}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"3 bad line\(s\): line 3: not valid JSON.*line 4: \"positive\".*line 5"):
        read_pairs(path)
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="no pairs"):
        read_pairs(tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="not found"):
        read_pairs(tmp_path / "missing.jsonl")
    good = read_pairs(write_pairs_file(tmp_path / "good.jsonl"))
    assert good[0] == Pair(*PAIRS[0])
