"""Which worker embeds which items, in which batches, into which shard.

Batches are cut from the ordered item list at multiples of the batch size, the same cut for every
backend and worker count, so an item is always computed in the same batch: with the same thread
count, every backend gives bitwise the same embeddings. Each worker gets a contiguous run of whole
batches (counts differ by at most one), and writes it as shards of whole batches. Shards are
numbered in item order, so the index lists items in manifest order whatever the worker count;
which shard an item lands in depends on the worker count, never on timing.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffscale.shards import shard_name


@dataclass(frozen=True)
class ShardPlan:
    number: int
    items: tuple

    @property
    def file(self) -> str:
        return shard_name(self.number)


@dataclass(frozen=True)
class WorkerPlan:
    worker: int
    shards: tuple[ShardPlan, ...]

    @property
    def items(self) -> int:
        return sum(len(s.items) for s in self.shards)


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) ranges of `parts` contiguous pieces of range(n), sizes differing by at most one."""
    base, extra = divmod(n, parts)
    ranges, start = [], 0
    for k in range(parts):
        end = start + base + (1 if k < extra else 0)
        ranges.append((start, end))
        start = end
    return ranges


def plan(items: list, workers: int, batch_size: int, shard_size: int) -> list[WorkerPlan]:
    """One WorkerPlan per worker (a worker may get nothing when there are fewer batches than workers)."""
    if workers < 1 or batch_size < 1 or shard_size < 1:
        raise ValueError("workers, batch_size and shard_size must be at least 1")
    n_batches = -(-len(items) // batch_size)
    batches_per_shard = max(1, shard_size // batch_size)
    plans, number = [], 0
    for worker, (first, last) in enumerate(split_evenly(n_batches, workers)):
        shards = []
        for b in range(first, last, batches_per_shard):
            end_batch = min(b + batches_per_shard, last)
            shards.append(ShardPlan(number, tuple(items[b * batch_size : end_batch * batch_size])))
            number += 1
        plans.append(WorkerPlan(worker, tuple(shards)))
    return plans


def batches(shard: ShardPlan, batch_size: int) -> list[tuple]:
    """The batches of one shard; shards start on batch boundaries, so these are the global cuts."""
    return [shard.items[i : i + batch_size] for i in range(0, len(shard.items), batch_size)]
