"""The order examples are trained in: one seeded permutation per epoch, cut into global batches,
each global batch cut into micro-batches and process slices.

Every optimizer step consumes the next global_batch = batch_size * grad_accum * world_size
examples, and process r takes its slice of each micro-batch, so 2 processes x accumulation a
see exactly the examples of 1 process x accumulation 2a.
"""
from __future__ import annotations

import torch


def epoch_order(lengths: list[int], *, seed: int, epoch: int, global_batch: int,
                group_by_length: bool = False) -> list[int]:
    """This epoch's example indices, a whole number of global batches long (the rest is dropped).

    A seeded permutation; with group_by_length, chunks of ~50 global batches are each sorted
    by length and cut into global batches, and the batches shuffled, so a batch pads little
    while the order stays random.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    order = order[: len(order) - len(order) % global_batch]
    if not group_by_length:
        return order
    mega = 50 * global_batch
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches += [chunk[k:k + global_batch] for k in range(0, len(chunk), global_batch)]
    return [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]


def micro_batch_indices(step_indices: list[int], batch_size: int, grad_accum: int, rank: int,
                        world_size: int) -> list[list[int]]:
    """This process's micro-batches of one optimizer step: slice r of each of the step's grad_accum parts."""
    per_micro = batch_size * world_size
    return [step_indices[j * per_micro + rank * batch_size: j * per_micro + (rank + 1) * batch_size]
            for j in range(grad_accum)]
