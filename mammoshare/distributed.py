"""Multi-GPU training the MONAI way: ``torchrun`` processes, one per GPU, with
``DistributedDataParallel``; what the bundles' ``configs/multi_gpu_train.json`` call.

    torchrun --nproc_per_node=N -m monai.bundle run \\
        --config_file "['bundles/B/configs/train.json','bundles/B/configs/multi_gpu_train.json']"

- NCCL on GPUs, gloo on CPU (tests); each process on the GPU of its ``LOCAL_RANK``.
- Seeds: process 0 keeps the run's seed, so its random draws are those of a one-process run;
  process ``r`` draws from ``seed + RANK_SEED_STRIDE * r`` (other latents, jitter and flips).
- Handlers: checkpoints, previews, logs and TensorBoard on process 0 only
  (:func:`rank_handlers`); every process keeps what changes training itself (the epoch seeder,
  validation and early stopping) and restores the same ``last.pt`` on resume.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "RANK_SEED_STRIDE",
    "rank",
    "world_size",
    "is_main_process",
    "local_device",
    "init_process_group",
    "destroy_process_group",
    "rank_seed",
    "ddp",
    "unwrap",
    "rank_zero_first",
    "rank_handlers",
    "ResumeOnly",
]

logger = logging.getLogger(__name__)

#: process r draws its random numbers from seed + RANK_SEED_STRIDE * r
RANK_SEED_STRIDE = 104_729


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if _initialised() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if _initialised() else int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    return rank() == 0


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_process_group(backend: str | None = None, timeout_minutes: float = 30.0) -> None:
    """Join the ``torchrun`` process group (once): NCCL with CUDA, gloo otherwise."""
    if _initialised():
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError(
            "multi_gpu_train.json runs under torchrun: torchrun --nproc_per_node=N -m monai.bundle run "
            "--config_file \"['.../train.json','.../multi_gpu_train.json']\" (RANK and WORLD_SIZE are not set)"
        )
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    logger.info("process %d of %d (%s backend) on %s", rank(), world_size(), backend, local_device())


def destroy_process_group() -> None:
    """Wait for every process, then leave the group."""
    if _initialised():
        dist.barrier()
        dist.destroy_process_group()


def rank_seed(seed: int) -> int:
    """The seed of this process: ``seed`` on process 0, ``seed + RANK_SEED_STRIDE * rank`` elsewhere."""
    return int(seed) + RANK_SEED_STRIDE * rank()


def ddp(module: torch.nn.Module, device: str | torch.device | None = None, sync_batch_norm: bool = True,
        **kwargs: Any) -> torch.nn.Module:
    """``module`` in ``DistributedDataParallel`` (the module itself when not distributed).

    On CUDA its BatchNorm layers become ``SyncBatchNorm`` (in place, same parameters and state
    keys) when ``sync_batch_norm``; gloo on CPU has no SyncBatchNorm, so each process normalises
    its own batch there. The optimizers built on ``module.parameters()`` stay valid."""
    if not _initialised():
        return module
    device = torch.device(device) if device is not None else local_device()
    if device.type == "cuda":
        if sync_batch_norm:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device], output_device=device, **kwargs)
    return torch.nn.parallel.DistributedDataParallel(module, **kwargs)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or itself)."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return module.module if isinstance(module, wrappers) else module


def rank_zero_first(make: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``make(*args, **kwargs)`` on process 0 first, then on the others (that may then read what it
    wrote, e.g. a datalist or the phantom data under the output folder)."""
    if not _initialised():
        return make(*args, **kwargs)
    if rank() != 0:
        dist.barrier()
    try:
        return make(*args, **kwargs)
    finally:
        if rank() == 0:
            dist.barrier()


class ResumeOnly:
    """On processes other than 0: restore ``last.pt`` through a checkpointer when the run starts
    (all processes resume from the same state), without saving anything."""

    def __init__(self, checkpointer: Any):
        self.checkpointer = checkpointer

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if getattr(self.checkpointer, "resume", False):
            engine.add_event_handler(Events.STARTED, self.checkpointer.load_last)


def rank_handlers(handlers: Sequence[Any] | None) -> list[Any]:
    """The handlers of this process: all on process 0; elsewhere only those that change training
    (the epoch seeder, with this process's seed; validation; early stopping), and a training
    checkpointer (GAN, diffusion) as :class:`ResumeOnly`. Checkpoints, previews, logs and TensorBoard are process 0's."""
    handlers = list(handlers or [])
    if is_main_process():
        return handlers
    from monai.handlers import EarlyStopHandler, ValidationHandler

    from .handlers import EpochSeeder, TrainingCheckpointer

    kept: list[Any] = []
    for handler in handlers:
        if isinstance(handler, EpochSeeder):
            handler.seed = rank_seed(handler.seed)
            kept.append(handler)
        elif isinstance(handler, (ValidationHandler, EarlyStopHandler)):
            kept.append(handler)
        elif isinstance(handler, TrainingCheckpointer):
            kept.append(ResumeOnly(handler))
    return kept
