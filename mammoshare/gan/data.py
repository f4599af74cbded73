"""The GAN's data loader: full, seeded batches of the lesion patches it trains on (the records come
from :func:`mammoshare.obtain.gan_training_records`)."""

from __future__ import annotations

import torch
from monai.data import DataLoader
from torch.utils.data import Sampler

from ..obtain import gan_training_records  # the GAN bundles' records, obtained in one place

__all__ = ["gan_training_records", "gan_dataloader", "StreamBatchSampler"]


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
