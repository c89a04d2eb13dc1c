"""data.order: one seeded order per epoch, whole global batches, length grouping, process slices."""
from __future__ import annotations

from data.order import epoch_order, micro_batch_indices


def test_epoch_order_is_seeded_whole_batches_and_groups_lengths():
    lengths = [(i * 37) % 101 for i in range(1000)]
    order = epoch_order(lengths, seed=1, epoch=0, global_batch=16)
    assert len(order) == 992 and len(set(order)) == 992
    assert order == epoch_order(lengths, seed=1, epoch=0, global_batch=16)
    assert order != epoch_order(lengths, seed=1, epoch=1, global_batch=16)
    grouped = epoch_order(lengths, seed=1, epoch=0, global_batch=16, group_by_length=True)
    assert sorted(grouped) == sorted(order)
    spread = lambda o: sum(max(lengths[i] for i in o[k:k + 16]) - min(lengths[i] for i in o[k:k + 16])  # noqa: E731
                           for k in range(0, len(o), 16))
    assert spread(grouped) < spread(order) / 5
    batch_maxima = [max(lengths[i] for i in grouped[k:k + 16]) for k in range(0, 992, 16)]
    assert batch_maxima != sorted(batch_maxima, reverse=True)  # the batches themselves are shuffled


def test_two_processes_see_the_examples_of_one_with_double_accumulation():
    step = list(range(100, 116))  # a global batch of 16
    one = micro_batch_indices(step, batch_size=2, grad_accum=8, rank=0, world_size=1)
    two = [micro_batch_indices(step, batch_size=2, grad_accum=4, rank=r, world_size=2) for r in (0, 1)]
    assert sorted(i for m in one for i in m) == step
    assert sorted(i for r in two for m in r for i in m) == step
    assert all(len(m) == 2 for r in two for m in r)
