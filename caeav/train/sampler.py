"""A resumable, shardable epoch sampler: the data order is a pure function of (seed, epoch), so a resumed run
reads exactly the items an uninterrupted one would have read.

    sampler = EpochSampler(len(dataset), seed=999, shuffle=True, rank=0, world=1)
    sampler.set_epoch(3, skip=10)     # epoch 3, resuming after the first 10 items of this rank
"""

from __future__ import annotations

import math

import torch


class EpochSampler(torch.utils.data.Sampler):
    """Permutation of `range(n)` drawn from `seed + epoch` (or identity), padded by wrapping to a multiple of `world`
    and sharded `rank::world` (as `DistributedSampler`); `skip` drops the first items of this rank's share."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, int(seed), shuffle, rank, world
        self.per_rank = math.ceil(n / world)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def order(self) -> list[int]:
        """This rank's whole share for the current epoch (before `skip`)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        total = self.per_rank * self.world
        idx = (idx * math.ceil(total / max(self.n, 1)))[:total]
        return idx[self.rank::self.world]

    def __iter__(self):
        return iter(self.order()[self.skip:])

    def __len__(self) -> int:
        return max(self.per_rank - self.skip, 0)
