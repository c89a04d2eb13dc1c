"""The course's prompt: question, item text, then "Price is $" and the whole-dollar answer.

    How much does this cost to the nearest dollar?\n\n{text}\n\nPrice is $   <- test_prompt
                                                                    123.00  <- completion

The training text is exactly test_prompt + completion, so the model is trained on the very
string it is asked at test time. Rounding is Python's `round`, as in the course: halves go
to the even dollar (66.5 -> "66.00", 27.5 -> "28.00", 0.5 -> "0.00"); the bundled course
prompts were written that way, so pricer's training targets agree with them.

An answer width N > 0 (data.answer_width) pads the dollars with zeros to N digits, "0123.00" for
N = 4: the model then writes the thousands digit first and states the magnitude before the rest,
where "123.00" decides it only when it writes "." after three digits. Prices of more than N
digits are written whole. The predictors read the padded answer as the same price.
"""
from __future__ import annotations

from typing import Any

from data.items import Item

QUESTION = "How much does this cost to the nearest dollar?"
PREFIX = "Price is $"
MAX_TEXT_TOKENS = 160


def cut_text(text: str, tokenizer: Any, max_tokens: int) -> str:
    """The text cut to its first `max_tokens` tokens (at a token boundary), decoded and stripped."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text.strip()
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True).strip()


def train_prompt(item: Item, tokenizer: Any = None, max_text_tokens: int | None = MAX_TEXT_TOKENS, *,
                 question: str = QUESTION, prefix: str = PREFIX) -> str:
    """The prompt the model answers: question, text (cut when a tokenizer is given), prefix."""
    text = item.text.strip()
    if tokenizer is not None and max_text_tokens is not None:
        text = cut_text(text, tokenizer, max_text_tokens)
    return f"{question}\n\n{text}\n\n{prefix}"


def test_prompt(item: Item, tokenizer: Any = None, max_text_tokens: int | None = MAX_TEXT_TOKENS, *,
                question: str = QUESTION, prefix: str = PREFIX) -> str:
    """The same prompt as training (everything before the answer)."""
    return train_prompt(item, tokenizer, max_text_tokens, question=question, prefix=prefix)


def completion(item: Item, width: int = 0) -> str:
    """The answer the model learns: the price rounded (Python round) to whole dollars, "123.00";
    with `width` > 0 the dollars zero-padded to that many digits ("0123.00" for 4)."""
    if width < 0:
        raise ValueError(f"answer width must be 0 (unpadded) or more, not {width}")
    return f"{round(item.price):0{width}d}.00"   # width 0 pads nothing


def full_train_text(item: Item, tokenizer: Any = None, max_text_tokens: int | None = MAX_TEXT_TOKENS, *,
                    question: str = QUESTION, prefix: str = PREFIX, answer_width: int = 0) -> str:
    """Prompt followed by the completion, the course's training text."""
    return (train_prompt(item, tokenizer, max_text_tokens, question=question, prefix=prefix)
            + completion(item, answer_width))


def to_example(item: Item, tokenizer: Any = None, max_text_tokens: int | None = MAX_TEXT_TOKENS, *,
               question: str = QUESTION, prefix: str = PREFIX, answer_width: int = 0) -> dict[str, str]:
    """{"prompt", "completion"}: the input CompletionCollator takes."""
    return {"prompt": train_prompt(item, tokenizer, max_text_tokens, question=question, prefix=prefix),
            "completion": completion(item, answer_width)}
