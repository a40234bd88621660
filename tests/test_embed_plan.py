import pytest

from diffscale.embed.plan import batches, plan, split_evenly


def test_split_evenly():
    assert split_evenly(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert split_evenly(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert split_evenly(0, 2) == [(0, 0), (0, 0)]


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8])
def test_batch_cuts_and_item_order_do_not_depend_on_workers(workers):
    items = list(range(23))
    plans = plan(items, workers, batch_size=4, shard_size=9)
    assert len(plans) == workers and [p.worker for p in plans] == list(range(workers))
    shards = [s for p in plans for s in p.shards]
    assert [s.number for s in shards] == list(range(len(shards)))  # numbered in item order
    assert [i for s in shards for i in s.items] == items
    cuts = [tuple(b) for s in shards for b in batches(s, 4)]
    assert cuts == [tuple(items[i:i + 4]) for i in range(0, 23, 4)]  # the global batch cuts
    assert all(len(s.items) <= 8 for s in shards)  # shard_size 9 rounds down to two batches
    counts = [len(p.shards and [b for s in p.shards for b in batches(s, 4)]) for p in plans]
    assert max(counts) - min(counts) <= 1  # whole batches, balanced


def test_more_workers_than_batches_leaves_some_idle():
    plans = plan(list(range(5)), 4, batch_size=4, shard_size=100)
    assert [p.items for p in plans] == [4, 1, 0, 0]


@pytest.mark.parametrize("workers,batch_size,shard_size", [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_rejects_zero(workers, batch_size, shard_size):
    with pytest.raises(ValueError, match="workers, batch_size and shard_size must be at least 1"):
        plan([1, 2, 3, 4], workers, batch_size, shard_size)
