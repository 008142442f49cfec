"""The run skeleton ``nexus-k train pretrain``, ``train sft`` and ``finetune`` share: chat batches, and
train-then-save of a full model under the process group."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.batches import IndexedBatchSource
    from training.chat_data import EncodedConversation
    from training.distributed import DistInfo
    from training.loop import EvalSet, TrainResult


def pad_token_id(tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0


def chat_batches(tokenizer: Any, train: list[EncodedConversation], held: list[EncodedConversation],
                 micro_batch_size: int, grad_accum_steps: int, info: DistInfo, seed: int
                 ) -> tuple[IndexedBatchSource, EvalSet | None]:
    """Padded training batches of encoded conversations (shuffled per epoch by ``seed``) and the held-out set."""
    from training.batches import IndexedBatchSource, pad_collate
    from training.loop import EvalSet

    pad = pad_token_id(tokenizer)

    def collate(items: list) -> dict:
        return pad_collate(items, pad)

    pairs = [(x.input_ids, x.labels) for x in train]
    source = IndexedBatchSource(pairs, collate, micro_batch_size, grad_accum_steps, info, seed)
    held_pairs = [(x.input_ids, x.labels) for x in held]
    chunks = [held_pairs[i : i + micro_batch_size] for i in range(0, len(held_pairs), micro_batch_size)]
    return source, (EvalSet([collate(chunk) for chunk in chunks]) if held_pairs else None)


def train_and_save(cfg: Any, model: Any, tokenizer: Any, source: Any, eval_set: EvalSet | None, info: DistInfo,
                   label: str) -> tuple[TrainResult, Path | None, dict[str, Any]]:
    """Save the resolved config, train with the shared loop (FSDP-sharded by decoder layer when asked), write
    the HF model folder (with the config beside it); returns the result, the folder (main process only) and
    the metrics summary. ``cfg`` has ``output_dir``, ``train`` and ``optim``."""
    from training.config import save_config
    from training.distributed import barrier
    from training.loop import run_training
    from training.model import decoder_layers, save_trained_model
    from training.report import metrics_summary

    out = Path(cfg.output_dir)
    if info.is_main:
        save_config(cfg, out)
    barrier(info)
    layers = decoder_layers(model) if info.strategy == "fsdp" else None
    result, wrapped = run_training(model, source, eval_set, cfg.train, cfg.optim, info, out / "checkpoints", label,
                                   layers)
    model_dir = save_trained_model(model, wrapped, tokenizer, out / "model", info)
    if info.is_main and model_dir is not None:
        save_config(cfg, model_dir, "nexus_k_train_config")
    return result, model_dir, metrics_summary(result)
