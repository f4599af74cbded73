"""The real lesion patches a GAN trains on, from a datalist, a raw dataset, or the phantom."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from monai.data import DataLoader
from torch.utils.data import Sampler

from ..datalist import SUBSETS, DatalistError, write_training_counts

__all__ = ["gan_training_records", "gan_dataloader", "StreamBatchSampler"]

logger = logging.getLogger(__name__)


def gan_training_records(
    dataset_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    task: str = "mass",
    output_dir: str | os.PathLike = "models",
    subsets: Sequence[str] = SUBSETS,
    dataset: str = "bcdr",
    seed: int = 2021,
    skip_bad: bool = False,
    apply_voi: bool | None = None,
) -> list[dict]:
    """The lesion records (label 1) of ``subsets`` to train a GAN on.

    By default every subset: the centre that shares a generator tests no classifier, so it trains
    on all its patches (the study's centre B, as the original trained on all of BCDR); ``subsets``
    narrows it (e.g. ``["training"]``). ``apply_voi`` is used when the datalist is built here.

    Source, in this order: ``datalist`` (a prepared datalist JSON), ``dataset_dir`` (a raw dataset
    root of type ``dataset``, read with the seed; its datalist is written to ``output_dir``), or,
    when neither is given, the phantom BCDR data written under ``output_dir/phantom`` (logged as
    such: it trains a demo generator with no clinical meaning). What it trains on (subsets, patches,
    patients) is written to ``output_dir/training_counts.json``.
    """
    from ..readers import obtain_datalist

    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise DatalistError(f"unknown subset(s) {unknown}; use {list(SUBSETS)}")
    data, source = obtain_datalist(datalist, dataset_dir, dataset, task, output_dir, seed, skip_bad, apply_voi)
    if data.get("phantom"):
        logger.warning("%s holds PHANTOM data: the generator will have no clinical meaning", source)
    records = [r for s in subsets for r in data.get(s, []) if r["label"] == 1]
    if not records:
        raise DatalistError(f"{source}: no lesion patches in the subset(s) {list(subsets)} for the task {task!r}")
    patients = len({r["patient_id"] for r in records})
    write_training_counts(output_dir, {"subsets": list(subsets), "patches": len(records), "patients": patients,
                                       "source": str(source)})
    logger.info(
        "GAN training data: %d lesion patches of %d patients from %s (subsets: %s)",
        len(records), patients, source, ", ".join(subsets),
    )
    return records


class StreamBatchSampler(Sampler[list[int]]):
    """Batches drawn from an endless, seeded stream of shuffled passes over the data.

    Batch ``g`` of the run holds stream positions ``g * B ... g * B + B - 1``; position ``k`` is sample
    ``perm_p[k % N]`` of pass ``p = k // N``, with ``perm_p`` a permutation seeded by (seed, p). An
    epoch is ``len(self)`` batches starting at batch ``(epoch - 1) * len(self)`` (:meth:`set_epoch`).
    The batches of an epoch depend on nothing but the seed and the epoch, so a resumed run sees the
    same data as an uninterrupted one, and every batch is full.

    Distributed (``num_replicas`` processes, this one ``rank``): the processes share the one stream,
    process ``r`` taking its batches ``r, r + R, r + 2R...`` (a distributed sampler over the same
    stream); an epoch is then ``N // (B * R)`` batches per process (at least ``min_batches``), so
    that the processes together still see each sample about once per epoch.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, min_batches: int = 1,
                 num_replicas: int = 1, rank: int = 0):
        if batch_size > num_samples:
            raise ValueError(
                f"batch size {batch_size} is larger than the {num_samples} lesion patches of the training data: "
                "lower --batch_size or use more data"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_samples, self.batch_size, self.seed = int(num_samples), int(batch_size), int(seed)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.batches_per_epoch = max(self.num_samples // (self.batch_size * self.num_replicas), int(min_batches), 1)
        self.epoch = 1
        self._pass, self._perm = -1, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _permutation(self, pass_index: int) -> list[int]:
        if pass_index != self._pass:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + pass_index) % (2**63 - 1))
            self._pass, self._perm = pass_index, torch.randperm(self.num_samples, generator=generator).tolist()
        return self._perm

    def __iter__(self):
        per_epoch = self.batches_per_epoch * self.num_replicas  # batches of the stream per epoch, all processes
        first = (self.epoch - 1) * per_epoch + self.rank
        for batch in range(first, first + per_epoch, self.num_replicas):
            positions = range(batch * self.batch_size, (batch + 1) * self.batch_size)
            yield [self._permutation(k // self.num_samples)[k % self.num_samples] for k in positions]


def gan_dataloader(dataset, batch_size: int = 16, num_workers: int = 0, seed: int = 0, min_batches: int = 1,
                   pin_memory: bool = False, distributed: bool = False) -> DataLoader:
    """The GAN's loader: full batches of ``batch_size`` patches from a :class:`StreamBatchSampler`
    (at least ``min_batches`` per epoch, e.g. WGAN-GP's n_critic, so that every epoch updates the
    generator), with its own generator for the workers' seeds. ``pin_memory``: page-locked batches
    for fast, asynchronous copies to a GPU. ``distributed``: this process's share of the stream
    (rank and world size of ``torch.distributed``). Workers are started anew every epoch: the epoch's
    seed then reaches their random transforms, which keeps resumed runs equal."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    replicas, rank = 1, 0
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        replicas, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    sampler = StreamBatchSampler(len(dataset), batch_size, seed=seed, min_batches=min_batches,
                                 num_replicas=replicas, rank=rank)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, generator=torch.Generator(),
                      pin_memory=bool(pin_memory))
