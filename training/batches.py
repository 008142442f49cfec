"""Turning a list of examples into micro-batches addressed by optimizer step: a resumed or multi-process
run sees exactly the examples an uninterrupted single process would, in the same global batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from nexus_k.core.errors import UserError
from training.distributed import DistInfo

Batch = dict[str, torch.Tensor]


def pad_collate(items: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    """Right-pad (input_ids, labels) pairs to the longest one; padded labels are -100."""
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def stack_collate(items: Sequence[torch.Tensor]) -> Batch:
    """Stack equal-length packed sequences; every position is a label."""
    ids = torch.stack(list(items))
    return {"input_ids": ids, "labels": ids.clone()}


class IndexedBatchSource:
    """Epoch-wise shuffled examples; global batch ``g`` of step ``s`` holds positions ``s*g ... s*g+g-1``
    of the endless sequence (epoch 0 permutation, epoch 1 permutation, ...)."""

    def __init__(
        self,
        items: Sequence[Any],
        collate: Callable[[list[Any]], Batch],
        micro_batch_size: int,
        grad_accum_steps: int,
        info: DistInfo,
        seed: int,
        shuffle: bool = True,
    ) -> None:
        if len(items) == 0:
            raise ValueError("no training examples")
        self.items, self.collate = items, collate
        self.micro, self.accum, self.info = micro_batch_size, grad_accum_steps, info
        self.seed, self.shuffle = seed, shuffle
        self._perms: dict[int, torch.Tensor] = {}

    @property
    def global_batch(self) -> int:
        """Examples per optimizer step over all processes."""
        return self.micro * self.accum * self.info.world_size

    def steps_for_epochs(self, epochs: float) -> int:
        """Optimizer steps that cover ``epochs`` passes over the examples."""
        return max(1, round(epochs * len(self.items) / self.global_batch))

    def _item(self, position: int) -> Any:
        epoch, offset = divmod(position, len(self.items))
        if not self.shuffle:
            return self.items[offset]
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(len(self.items), generator=gen)}
        return self.items[int(self._perms[epoch][offset])]

    def micro_batches(self, step: int) -> list[Batch]:
        """This process's ``grad_accum_steps`` micro-batches of step ``step``."""
        base = step * self.global_batch
        out = []
        for m in range(self.accum):
            start = base + (m * self.info.world_size + self.info.rank) * self.micro
            out.append(self.collate([self._item(p) for p in range(start, start + self.micro)]))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save: the position follows from the step."""
        return {"seed": self.seed, "items": len(self.items)}

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        """Check the resumed run uses the same examples and seed."""
        if state.get("items") != len(self.items) or state.get("seed") != self.seed:
            raise UserError("checkpoint was made with different data or seed; use a fresh output folder")
