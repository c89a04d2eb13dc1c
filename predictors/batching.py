"""What the model predictors share: inference mode, left-padded batches grouped by length, a progress bar."""
from __future__ import annotations

import contextlib
import sys
from contextvars import ContextVar
from typing import Any, Iterator, Sequence


def model_device(model: Any) -> Any:
    """The torch.device the model's (first) parameters are on."""
    return next(model.parameters()).device


@contextlib.contextmanager
def inference(model: Any) -> Iterator[None]:
    """Eval mode under torch.inference_mode, restoring the caller's train/eval mode afterwards."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def left_padded_batches(tokenizer: Any, prompts: Sequence[str], batch_size: int, device: Any) -> Iterator[tuple]:
    """(indices, input_ids, attention_mask) per batch, left padded, prompts grouped by length."""
    import torch

    from data import pad_token_id

    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    # Similar lengths together waste less padding; results go back by index, so order is kept.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    pad = pad_token_id(tokenizer)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        yield idx, ids.to(device), mask.to(device)


# The bar of a caller that predicts batch by batch (evaluation.run.predict_in_batches): the
# predictors' own bars count on it instead of drawing one bar per batch.
_OUTER_BAR: ContextVar[Any] = ContextVar("pricer_outer_bar", default=None)


def progress(total: int, desc: str) -> Any:
    """A tqdm bar on stderr counting items; inside `progress_over`, that bar (left open on exit)."""
    from tqdm.auto import tqdm

    outer = _OUTER_BAR.get()
    if outer is not None:
        return contextlib.nullcontext(outer)
    return tqdm(total=total, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True)


@contextlib.contextmanager
def progress_over(total: int, desc: str, initial: int = 0) -> Iterator[Any]:
    """One bar for many predict() calls: the bars `progress` would open inside count on this one."""
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=initial, desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True) as bar:
        token = _OUTER_BAR.set(bar)
        try:
            yield bar
        finally:
            _OUTER_BAR.reset(token)
