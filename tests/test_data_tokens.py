"""The tokenizer probe on tokenizers with known answers."""
import pytest
from transformers import AutoTokenizer

from data.tokens import format_probe, main, probe_tokenizer


def test_digit_tokenizer(tiny_tokenizer):
    probe = probe_tokenizer(tiny_tokenizer)
    assert probe.numbers["100"] == ["1", "0", "0"] and probe.numbers["0"] == ["0"]
    assert (probe.single_token_ints, probe.all_ints_single) == (10, False)
    assert probe.completions["30.00"] == ["3", "0", ".", "0", "0"]
    assert probe.prefix_same_at_prompt_end and probe.prefix_found_in_training_ids


def test_gemma_like_tokenizer(tiny_gemma_tokenizer):
    probe = probe_tokenizer(tiny_gemma_tokenizer)
    assert probe.numbers["100"] == ["1", "0", "0"] and probe.single_token_ints == 10
    assert probe.completions["250.00"] == ["2", "5", "0", ".", "0", "0"]   # no "\u2581" before the answer
    assert tiny_gemma_tokenizer.convert_ids_to_tokens(probe.prefix_ids) == ["Price", "\u2581is", "\u2581$"]
    assert probe.prefix_same_at_prompt_end and probe.prefix_found_in_training_ids


def test_triples_tokenizer(tiny_llama3_dir):
    probe = probe_tokenizer(AutoTokenizer.from_pretrained(tiny_llama3_dir))
    assert probe.all_ints_single and probe.single_token_ints == 1000
    assert probe.numbers["999"] == ["999"] and probe.numbers["1000"] == ["100", "0"]
    assert probe.completions["250.00"] == ["250", ".", "0", "0"]  # 249.95 rounds to 250
    assert "integers 0-999 that are one token: 1000/1000 (all)" in format_probe(probe)


def test_merging_tokenizer_is_flagged():
    from test_data_collator import _merging_tokenizer

    probe = probe_tokenizer(_merging_tokenizer())
    assert probe.prefix_same_at_prompt_end and not probe.prefix_found_in_training_ids
    assert "a template-search collator would fail" in format_probe(probe)


def test_cli(tiny_llama_dir, capsys):
    assert main([str(tiny_llama_dir)]) == 0
    out = capsys.readouterr().out
    assert "integers 0-999 that are one token: 10/1000" in out and "'Price is $' alone" in out


@pytest.mark.smollm2
def test_smollm2(request):
    pytest.importorskip("quant")
    tok = AutoTokenizer.from_pretrained(request.getfixturevalue("smollm2_dir"))
    probe = probe_tokenizer(tok)
    assert probe.single_token_ints == 10  # SmolLM2 splits numbers into digits
    assert probe.prefix_same_at_prompt_end


@pytest.mark.slow
@pytest.mark.gemma3
def test_gemma3(gemma3_dir, capsys):
    probe = probe_tokenizer(AutoTokenizer.from_pretrained(gemma3_dir))
    assert probe.single_token_ints == 10 and probe.numbers["999"] == ["9", "9", "9"]
    assert probe.completions["89.00"] == ["8", "9", ".", "0", "0"]
    assert probe.prefix_ids == [11280, 563, 609]   # "Price", "\u2581is", "\u2581$"
    assert probe.prefix_same_at_prompt_end and probe.prefix_found_in_training_ids
    assert main(["gemma3-270m"]) == 0 and "integers 0-999 that are one token: 10/1000" in capsys.readouterr().out
