"""torchrun support: process-group set-up (gloo on CPU, nccl on GPU), DDP or FSDP wrapping, and the few
collectives the training loop needs. A single process without torchrun needs none of it."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from nexus_k.core.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    """Global rank (0 in a single process)."""
    world_size: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this node (picks the GPU)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Device this process computes on."""
    strategy: str = "none"
    """``none``, ``ddp`` or ``fsdp``."""

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and draws progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is running."""
        return self.world_size > 1


def init_distributed(strategy: str = "ddp", backend: str = "auto") -> DistInfo:
    """Join the torchrun job described by the environment, or describe a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available()
    if world <= 1:
        return DistInfo(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl" and not use_cuda:
        raise UserError("distributed.backend nccl needs CUDA GPUs; use gloo on CPU")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, strategy)
    log.info("rank %d of %d on %s (%s, %s)", info.rank, info.world_size, device, backend, strategy)
    return info


def shutdown_distributed(wait_for_peers: bool = True) -> None:
    """Leave the process group, if one was joined. Call it once the run's DDP/FSDP models are gone."""
    if not dist.is_initialized():
        return
    if wait_for_peers:
        dist.barrier()
    # A DDP Reducer (or FSDP state) still alive here holds the gloo group past destroy_process_group;
    # its destructor then runs at interpreter exit and can wait forever joining the group's worker
    # threads. Collecting the dead models first makes the group die here, inside destroy.
    gc.collect()
    dist.destroy_process_group()


def run_distributed(job: Callable[[DistInfo], T], strategy: str = "ddp", backend: str = "auto") -> T:
    """Join the torchrun job described by the environment (if any), run ``job(info)``, then leave the
    process group after every model the job built is released (also when it raises)."""
    info = init_distributed(strategy, backend)
    try:
        result = job(info)
    except BaseException as err:
        # The traceback keeps the job's frames, and with them the wrapped model, alive.
        traceback.clear_frames(err.__traceback__)
        shutdown_distributed(wait_for_peers=False)
        raise
    shutdown_distributed()
    return result


def wrap_model(module: nn.Module, info: DistInfo, layers: list[nn.Module] | None = None) -> nn.Module:
    """DDP or FSDP (each of ``layers`` sharded on its own, then the root) for a multi-process job."""
    if not info.distributed:
        return module
    if info.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for layer in layers or []:
            fully_shard(layer, mesh=mesh)
        fully_shard(module, mesh=mesh)
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, info: DistInfo, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps that are not the last."""
    if enabled or not info.distributed:
        yield
    elif info.strategy == "fsdp":
        model.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)  # type: ignore[operator]
    else:
        with model.no_sync():  # type: ignore[operator]
            yield


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few numbers over all processes (a no-op in a single process)."""
    if not info.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_true(flag: bool, info: DistInfo) -> bool:
    """True if ``flag`` is true on any process (for stop decisions all ranks must share)."""
    return all_reduce_sum([float(flag)], info)[0] > 0


def barrier(info: DistInfo) -> None:
    """Wait for every process."""
    if info.distributed:
        dist.barrier()
