"""quant/gemma.py: Gemma's tokenizer rebuilt from a GGUF's vocabulary, on a tiny GGUF written here from
the tiny Gemma tokenizer (its vocabulary is in merge order, as Gemma's GGUF is); the real one is
compared with transformers' in tests marked gemma3."""
import json

import pytest

from quant.gemma import CONTROL, USER_DEFINED, bpe_merges, gemma_tokenizer, read_gguf_vocab, repair_tokenizer
from quant.tiny import CORPUS, tiny_gemma_tokenizer
from quant.tokenizer_check import TokenizerExpectations, check_tokenizer

NORMAL = 1


@pytest.fixture(scope="module")
def tiny():
    return tiny_gemma_tokenizer()


@pytest.fixture(scope="module")
def tiny_gguf(tiny, tmp_path_factory):
    """A vocabulary-only GGUF of the tiny tokenizer, plus a user-defined "\\n\\n" and a 2-space token as Gemma's
    has (stored with real spaces)."""
    from gguf import GGUFWriter

    vocab = tiny.get_vocab()
    tokens = sorted(vocab, key=vocab.get) + ["\n\n", "  "]
    specials = {"<pad>", "<eos>", "<bos>", "<unk>"}
    types = [CONTROL if t in specials else USER_DEFINED if t in ("\n\n", "  ") else NORMAL for t in tokens]
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = GGUFWriter(str(path), "gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores([-1000.0] * len(tokens))   # Gemma's scores say nothing of merge order
    for add, token in ((writer.add_bos_token_id, "<bos>"), (writer.add_eos_token_id, "<eos>"),
                       (writer.add_unk_token_id, "<unk>"), (writer.add_pad_token_id, "<pad>")):
        add(tokens.index(token))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_merges_follow_vocabulary_order_longest_left_piece_first():
    tokens = ["a", "b", "c", "ab", "bc", "abc", "x"]
    assert bpe_merges(tokens) == [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]


def test_gguf_vocabulary_reads_back(tiny, tiny_gguf):
    vocab = read_gguf_vocab(tiny_gguf)
    assert vocab.tokens[:4] == ["<pad>", "<eos>", "<bos>", "<unk>"] and vocab.tokens[-2:] == ["\n\n", "  "]
    assert (vocab.pad_id, vocab.eos_id, vocab.bos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.types[:4] == [CONTROL] * 4 and vocab.types[-1] == USER_DEFINED


def test_rebuilt_tokenizer_tokenizes_like_the_original(tiny, tiny_gguf):
    rebuilt = gemma_tokenizer(read_gguf_vocab(tiny_gguf))
    for text in CORPUS:
        assert rebuilt.encode(text).ids == tiny.encode(text), text
        assert rebuilt.decode(rebuilt.encode(text).ids, skip_special_tokens=True) == text
    encoded = rebuilt.encode("Price is $12.00\n\nA  ")
    assert encoded.tokens == ["<bos>", "Price", "\u2581is", "\u2581$", "1", "2", ".", "0", "0", "\n\n", "A",
                              "\u2581\u2581"]


def test_repair_turns_a_failing_folder_into_a_passing_one(tiny, tiny_gguf, tmp_path):
    from test_quant_tokenizer_check import character_level

    ids = tuple(tiny.encode("Price is $123.00"))
    expect = TokenizerExpectations("Price is $123.00", ids, bos="<bos>", round_trip=CORPUS)
    character_level(tiny).save_pretrained(tmp_path)
    assert check_tokenizer(tmp_path, expect)
    repair_tokenizer(tiny_gguf, tmp_path)
    assert check_tokenizer(tmp_path, expect) == []
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "TokenizersBackend" and config["bos_token"] == "<bos>"
    assert config["pad_token"] == "<pad>" and config["add_bos_token"] is True
