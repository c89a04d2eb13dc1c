"""CompletionCollator: labels cover exactly the answer + EOS, built by construction."""
import pytest
import torch

from data import CompletionCollator, DataError, Item, to_example

EXAMPLES = [
    {"prompt": "How much does this cost to the nearest dollar?\n\nCordless drill with two batteries.\n\nPrice is $",
     "completion": "89.00"},
    {"prompt": "How much does this cost to the nearest dollar?\n\nOffice desk organizer.\n\nPrice is $",
     "completion": "7.00"},
]


def _supervised(batch, row):
    return batch["input_ids"][row][batch["labels"][row] != -100].tolist()


def test_labels_are_exactly_completion_and_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.pad_token_id is None  # pads with eos
    batch = CompletionCollator(tok)(EXAMPLES)
    for row, ex in enumerate(EXAMPLES):
        prompt_ids = tok(ex["prompt"])["input_ids"]
        assert prompt_ids[0] == tok.bos_token_id
        n = len(prompt_ids)
        answer = tok(ex["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert batch["input_ids"][row, :n].tolist() == prompt_ids  # what evaluation feeds the model
        assert (batch["labels"][row, :n] == -100).all()
        assert batch["labels"][row, n:n + len(answer)].tolist() == answer
        assert tok.decode(_supervised(batch, row)) == ex["completion"] + "</s>"
    assert batch["num_supervised"].item() == sum(len(tok(e["completion"], add_special_tokens=False)["input_ids"]) + 1
                                                 for e in EXAMPLES)
    assert batch["num_supervised"].dtype == torch.long and batch["num_supervised"].dim() == 0


def test_right_padding_and_multiple_of_8(tiny_tokenizer):
    collator = CompletionCollator(tiny_tokenizer, pad_to_multiple_of=8)
    batch = collator(EXAMPLES)
    lengths = [len(collator.encode(e)[0]) for e in EXAMPLES]
    assert batch["input_ids"].shape == (2, -(-max(lengths) // 8) * 8)
    for row, n in enumerate(lengths):
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
        assert (batch["input_ids"][row, n:] == tiny_tokenizer.eos_token_id).all()
        assert (batch["labels"][row, n:] == -100).all()
    plain = CompletionCollator(tiny_tokenizer)
    assert plain(EXAMPLES)["input_ids"].shape[1] == max(lengths) and plain.truncated == 0


def test_truncation_cuts_the_prompt_middle_never_the_answer(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = {"prompt": "How much does this cost to the nearest dollar?\n\n" + "Brand new, sealed box. " * 30
          + "\n\nPrice is $", "completion": "123.00"}
    collator = CompletionCollator(tok, max_length=40)
    ids, labels = collator.encode(ex)
    assert collator.truncated == 1
    prompt_ids = tok(ex["prompt"])["input_ids"]
    answer = tok("123.00", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(ids) == 40 and ids[-len(answer):] == answer and labels[-len(answer):] == answer
    n_prompt = 40 - len(answer)
    head = 1 + (n_prompt - 1) // 2
    assert ids[:head] == prompt_ids[:head]  # BOS and the question
    assert ids[head:n_prompt] == prompt_ids[len(prompt_ids) - (n_prompt - head):]  # the tail with "Price is $"
    assert tok.decode(ids[:n_prompt]).endswith("\n\nPrice is $")
    with pytest.raises(DataError, match="raise max_length"):
        CompletionCollator(tok, max_length=5).encode(ex)


def test_pad_token_and_label_pad_options(tiny_llama3_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama3_dir)
    tok.pad_token = "<unk>"
    batch = CompletionCollator(tok, label_pad=-1)(EXAMPLES)
    short = batch["attention_mask"][1].sum()
    assert (batch["input_ids"][1, short:] == tok.pad_token_id).all()
    # 0-999 are single tokens in this tokenizer: "89.00" -> "89" "." "0" "0" (+ eos).
    assert tok.convert_ids_to_tokens(batch["labels"][0][batch["labels"][0] != -1].tolist()) == \
        ["89", ".", "0", "0", "</s>"]
    assert batch["num_supervised"].item() == 5 + 5  # "7" "." "0" "0" "</s>"


def test_gemma_labels_padding_and_numbers(tiny_gemma_tokenizer):
    """Gemma: <bos> first, a pad token that is not EOS, "\u2581$" ending the prompt and one label per digit,
    with no SentencePiece space before the separately tokenized answer."""
    tok = tiny_gemma_tokenizer
    collator = CompletionCollator(tok)
    assert (collator.pad_id, collator.lead) == (tok.convert_tokens_to_ids("<pad>"), 1)
    assert collator.pad_id != tok.eos_token_id
    batch = collator(EXAMPLES)
    for row, ex in enumerate(EXAMPLES):
        prompt_ids = tok(ex["prompt"])["input_ids"]
        n = len(prompt_ids)
        assert tok.convert_ids_to_tokens(prompt_ids[:1] + prompt_ids[-1:]) == ["<bos>", "\u2581$"]
        assert batch["input_ids"][row, :n].tolist() == prompt_ids and (batch["labels"][row, :n] == -100).all()
        # Tokenized apart or together, the answer gets the same ids: no merge across "$" and the digits.
        joined = tok(ex["prompt"] + ex["completion"])["input_ids"]
        assert batch["input_ids"][row, :len(joined)].tolist() == joined
    supervised = tok.convert_ids_to_tokens(_supervised(batch, 0))
    assert supervised == ["8", "9", ".", "0", "0", "<eos>"]
    short = int(batch["attention_mask"][1].sum())
    assert (batch["input_ids"][1, short:] == collator.pad_id).all() and (batch["labels"][1, short:] == -100).all()
    assert batch["num_supervised"].item() == 6 + 5   # "8" "9" "." "0" "0" <eos>, "7" "." "0" "0" <eos>


def test_items_through_to_example(tiny_tokenizer):
    item = Item("Acme", "Acme\n" + "water filter " * 200, 42.4)
    ex = to_example(item, tiny_tokenizer, max_text_tokens=100)
    text = ex["prompt"].split("\n\n")[1]
    assert len(tiny_tokenizer.encode(text, add_special_tokens=False)) <= 100
    batch = CompletionCollator(tiny_tokenizer, max_length=256)([ex])
    assert batch["input_ids"][0, : len(tiny_tokenizer(ex["prompt"])["input_ids"])].tolist() == \
        tiny_tokenizer(ex["prompt"])["input_ids"]  # no truncation needed
    assert tiny_tokenizer.decode(_supervised(batch, 0)) == "42.00</s>"


def _merging_tokenizer():
    """A byte-level BPE whose pre-tokenizer keeps "$12.00" in one word, so "$1" merges."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["How much does this cost to the nearest dollar?\n\nWater filter for refrigerators, fits most.\n\n"]
    corpus += [f"Price is ${p}.00" for p in range(10, 200)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s+"), behavior="merged_with_next"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus * 3, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def _template_search_labels(tok, example, template="Price is $"):
    """The usual alternative (trl's completion-only collator): tokenize the joined text, find the template."""
    ids = tok(example["prompt"] + example["completion"])["input_ids"] + [tok.eos_token_id]
    pattern = tok(template, add_special_tokens=False)["input_ids"]
    for start in range(len(ids) - len(pattern) + 1):
        if ids[start:start + len(pattern)] == pattern:
            end = start + len(pattern)
            return ids, [-100] * end + ids[end:]
    return ids, None


def test_template_search_fails_where_construction_does_not():
    tok = _merging_tokenizer()
    ex = {"prompt": "How much does this cost to the nearest dollar?\n\nWater filter\n\nPrice is $",
          "completion": "12.00"}
    # "Price is $" alone ends with the token " $"; followed by "12.00" the BPE merges " $1".
    alone = tok.convert_ids_to_tokens(tok("Price is $", add_special_tokens=False)["input_ids"])
    joined = tok.convert_ids_to_tokens(tok(ex["prompt"] + ex["completion"])["input_ids"])
    assert alone[-1] == "Ġ$" and "Ġ$1" in joined and "Ġ$" not in joined

    ids, labels = _template_search_labels(tok, ex)
    assert labels is None  # the template is never found: that example would teach nothing (or crash)

    batch = CompletionCollator(tok)([ex])
    prompt_ids = tok(ex["prompt"])["input_ids"]
    assert batch["input_ids"][0, :len(prompt_ids)].tolist() == prompt_ids  # exactly the test-time ids
    assert batch["input_ids"][0].tolist() != ids  # differs from tokenizing the joined string
    assert tok.decode(_supervised(batch, 0)) == "12.00</s>"
    assert batch["num_supervised"].item() == len(tok("12.00", add_special_tokens=False)["input_ids"]) + 1


def test_requires_eos(tiny_tokenizer):
    class NoEos:
        eos_token_id = None

    with pytest.raises(DataError, match="no eos token"):
        CompletionCollator(NoEos())
