"""The loop's loss module and optimizer against transformers' own loss and torch's reference AdamW."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.config import OptimConfig
from training.loop import CausalLMLoss, build_optimizer


@pytest.fixture
def tiny_lm(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.mark.parametrize("masked", [False, True], ids=["every-position", "assistant-only"])
def test_loss_matches_transformers_mean_loss(tiny_lm, masked: bool) -> None:
    """Packed pretraining (every position a label) and SFT-style masked labels take different paths."""
    ids = torch.randint(0, tiny_lm.config.vocab_size, (3, 24), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    if masked:
        labels[:, :10] = -100
        labels[1, 15:] = -100
    with torch.no_grad():
        nll, count = CausalLMLoss(tiny_lm)(ids, labels)
        reference = tiny_lm(input_ids=ids, labels=labels).loss
    assert int(count) == int((labels[:, 1:] != -100).sum())
    assert float(nll / count) == pytest.approx(float(reference), rel=1e-5)


def test_fused_adamw_takes_the_same_steps_as_the_reference(tiny_lm) -> None:
    cfg = OptimConfig(lr=1e-2, warmup_steps=0)
    twin = type(tiny_lm)(tiny_lm.config)
    twin.load_state_dict(tiny_lm.state_dict())
    ours = build_optimizer(tiny_lm, cfg)
    assert all(group.get("fused") for group in ours.param_groups)
    decay = [p for p in twin.parameters() if p.dim() >= 2]
    rest = [p for p in twin.parameters() if p.dim() < 2]
    reference = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        foreach=False,
    )
    ids = torch.randint(0, tiny_lm.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(2))
    for model, opt in ((tiny_lm, ours), (twin, reference)):
        for _ in range(3):
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(tiny_lm.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
