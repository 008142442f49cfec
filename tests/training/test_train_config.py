"""Shipped training configs parse, build their model and have the advertised size; config errors are clear."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nexus_k.core.errors import UserError
from training.config import PretrainConfig, SftConfig, load_config, save_config
from training.model import build_llama, count_parameters

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


class _StandInTokenizer:
    """The 32k-token tokenizer the configs expect (`nexus-k tokenizer train`'s default size)."""

    bos_token_id, eos_token_id, pad_token_id = 1, 2, 3

    def __len__(self) -> int:
        return 32000


@pytest.mark.parametrize(("name", "low", "high"), [("ko-small.yaml", 8e6, 14e6), ("ko-100m.yaml", 80e6, 130e6)])
def test_shipped_pretrain_config_builds_model_of_advertised_size(name: str, low: float, high: float) -> None:
    cfg = load_config(PretrainConfig, CONFIGS / name)
    with torch.device("meta"):
        model = build_llama(cfg.model, _StandInTokenizer())
    params = count_parameters(model)
    assert low <= params <= high, params
    assert model.config.hidden_size == cfg.model.hidden_size
    assert model.config.num_hidden_layers == cfg.model.num_hidden_layers
    assert cfg.data.seq_len <= cfg.model.max_position_embeddings


def test_shipped_sft_config_parses() -> None:
    cfg = load_config(SftConfig, CONFIGS / "sft-chat.yaml")
    assert cfg.data.max_length == 512
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.train.max_steps == 500


def test_unknown_key_is_a_one_line_error_listing_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("output_dir: x\ntokenizer: y\ntrain: {max_stepz: 3}\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) max_stepz; valid: .*max_steps"):
        load_config(PretrainConfig, path)


def test_wrong_type_and_bad_value_are_user_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("output_dir: x\ntokenizer: y\ntrain: {max_steps: lots}\n")
    with pytest.raises(UserError, match="max_steps: expected int"):
        load_config(PretrainConfig, path)
    path.write_text("output_dir: x\ntokenizer: y\ntrain: {precision: fp8}\n")
    with pytest.raises(UserError, match="precision must be bf16 or fp32"):
        load_config(PretrainConfig, path)


def test_overrides_and_resolved_config_round_trip(tmp_path: Path) -> None:
    cfg = load_config(PretrainConfig, CONFIGS / "ko-small.yaml", ["train.max_steps=7", "optim.lr=0.01"])
    assert cfg.train.max_steps == 7
    assert cfg.optim.lr == pytest.approx(0.01)
    saved = save_config(cfg, tmp_path)
    again = load_config(PretrainConfig, saved)
    assert again == cfg
