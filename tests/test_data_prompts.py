"""Prompts byte for byte, the course's rounding, the token cut, agreement with the course's own prompts."""
import gzip
import json

import pytest

from data import Item, completion, full_train_text, to_example, train_prompt
from data import test_prompt as make_test_prompt  # not collected as a test

ITEM = Item(title="Acme Filter", text="Acme Filter\nFits most fridges.", price=12.5)


def test_prompt_byte_for_byte():
    expected = "How much does this cost to the nearest dollar?\n\nAcme Filter\nFits most fridges.\n\nPrice is $"
    assert train_prompt(ITEM) == expected
    assert make_test_prompt(ITEM) == expected
    assert full_train_text(ITEM) == expected + "12.00"
    assert to_example(ITEM) == {"prompt": expected, "completion": "12.00"}


def test_prompt_options():
    prompt = train_prompt(ITEM, question="Guess the price.", prefix="USD ")
    assert prompt == "Guess the price.\n\nAcme Filter\nFits most fridges.\n\nUSD "


@pytest.mark.parametrize("price, answer", [
    (12.5, "12.00"), (13.5, "14.00"), (0.5, "0.00"), (1.49, "1.00"), (2.51, "3.00"),
    (999.49, "999.00"), (66.5, "66.00"), (27.5, "28.00"),
])
def test_completion_uses_python_round(price, answer):
    assert completion(Item("t", "t", price)) == answer


@pytest.mark.parametrize("price, width, answer", [
    (12.5, 4, "0012.00"), (0.4, 4, "0000.00"), (999.5, 4, "1000.00"), (1234.4, 4, "1234.00"),
    (12345.0, 4, "12345.00"),   # longer than the width: written whole
    (7.0, 1, "7.00"), (12.5, 0, "12.00"),
])
def test_padded_answers_put_the_magnitude_first(price, width, answer):
    assert completion(Item("t", "t", price), width) == answer


def test_padded_answer_in_the_training_example():
    assert to_example(ITEM, answer_width=4)["completion"] == "0012.00"
    assert full_train_text(ITEM, answer_width=3).endswith("\n\nPrice is $012.00")
    with pytest.raises(ValueError, match="answer width must be 0"):
        completion(ITEM, -1)


def test_text_cut_to_max_tokens_at_token_boundary(tiny_tokenizer):
    item = Item("Kids toy", "Kids toy building blocks set, 500 pieces, compatible with major brands.", 9.0)
    ids = tiny_tokenizer.encode(item.text, add_special_tokens=False)
    assert len(ids) > 6
    cut = tiny_tokenizer.decode(ids[:6]).strip()
    assert train_prompt(item, tiny_tokenizer, max_text_tokens=6) == \
        f"How much does this cost to the nearest dollar?\n\n{cut}\n\nPrice is $"
    assert item.text.startswith(cut) and len(cut) < len(item.text)
    assert train_prompt(item, tiny_tokenizer, max_text_tokens=len(ids)) == train_prompt(item)
    assert train_prompt(item, tiny_tokenizer, max_text_tokens=None) == train_prompt(item)


def test_agrees_with_the_course_prompts_in_the_bundled_files(bundled_data_dir):
    with gzip.open(bundled_data_dir / "appliances-lite.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    same = 0
    for row in rows:
        ours = full_train_text(Item(row["title"], row["text"], row["price"]))
        if ours == row["prompt"]:
            same += 1
        else:
            # The course kept trailing whitespace of the decoded text; the bundled text was stripped.
            head, answer = row["prompt"].rsplit("\n\nPrice is $", 1)
            assert head.rstrip() + "\n\nPrice is $" + answer == ours
    assert same > 0.9 * len(rows)
