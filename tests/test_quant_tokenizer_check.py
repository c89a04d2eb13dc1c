"""quant/tokenizer_check.py: the round-trip check passes a tokenizer that tokenizes like its model and
names what is wrong with one that does not (a character-level tokenizer without BOS, what a broken
save gives)."""
import pytest

from quant.tiny import tiny_gemma_tokenizer
from quant.tokenizer_check import TokenizerExpectations, check_tokenizer, tokenizer_problems

ASCII_ROUND_TRIP = ("Price is $123.00", "How much does this cost to the nearest dollar?\n\nPrice is $",
                    "  two  spaces and\n\nnew lines")


@pytest.fixture(scope="module")
def good():
    return tiny_gemma_tokenizer()


@pytest.fixture(scope="module")
def expect(good):
    """The tiny Gemma tokenizer's answers, written down by hand from its token strings."""
    tokens = ["<bos>", "Price", "\u2581is", "\u2581$", "1", "2", "3", ".", "0", "0"]
    return TokenizerExpectations("Price is $123.00", tuple(good.convert_tokens_to_ids(tokens)), bos="<bos>",
                                 round_trip=ASCII_ROUND_TRIP)


def character_level(good):
    """The same vocabulary without merges or BOS template: one token per character, nothing prepended."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(good.backend_tokenizer.to_str())
    backend.model = models.BPE(vocab=good.get_vocab(), merges=[], unk_token="<unk>")
    backend.post_processor = None
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def test_a_good_tokenizer_has_no_problems(good, expect, tmp_path):
    assert good.convert_ids_to_tokens(list(expect.ids))[3] == "\u2581$"
    assert tokenizer_problems(good, expect) == []
    good.save_pretrained(tmp_path)
    assert check_tokenizer(tmp_path, expect) == []


def test_a_character_level_tokenizer_without_bos_fails_every_way(good, expect, tmp_path):
    broken = character_level(good)
    assert broken.convert_ids_to_tokens(broken.encode("Price")) == ["P", "r", "i", "c", "e"]
    problems = tokenizer_problems(broken, expect)
    assert "'Price' is 5 tokens ['P', 'r', 'i', 'c', 'e'], not one" in problems
    assert "' is' is 3 tokens ['\u2581', 'i', 's'], not one" in problems
    assert any(p.startswith("encodings start with ['a'], not <bos>") for p in problems)
    assert any(p.startswith("'Price is $123.00' encodes to [") for p in problems)
    broken.save_pretrained(tmp_path)
    assert check_tokenizer(tmp_path, expect) == problems


def test_bos_where_none_is_expected_and_a_lossy_round_trip(good, expect):
    no_bos = TokenizerExpectations(expect.text, expect.ids[1:], bos=None)
    problems = tokenizer_problems(good, no_bos)
    assert problems[0] == "encodings start with ['<bos>'], expected no special token"
    # The tiny vocabulary is ASCII: the default round trip's accented text comes back as <unk>s, which are dropped.
    assert any(p.startswith("'Caf\u00e9 cr\u00e8me") for p in problems)


def test_a_folder_that_does_not_load_is_a_problem(expect, tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    (problem,) = check_tokenizer(tmp_path, expect)
    assert problem.startswith("AutoTokenizer cannot load it")
