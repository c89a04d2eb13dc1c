"""The tokenizer probe on tokenizers with known answers."""
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from data.tokens import format_probe, main, probe_tokenizer

REPO = Path(__file__).resolve().parent.parent


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


def test_cli_resolves_names_through_the_resolver_it_is_given(tiny_llama_dir, capsys):
    assert main(["tiny-name"], resolve={"tiny-name": str(tiny_llama_dir)}.__getitem__) == 0
    assert "integers 0-999 that are one token: 10/1000" in capsys.readouterr().out


def test_the_data_package_never_imports_quant_and_the_command_wires_it_in(tiny_llama_dir):
    """data.tokens and python -m data import no quant; `python -m data.tokens` passes quant.resolve_model."""
    code = "import sys, data.tokens, data.__main__; print('quant' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False", imported.stderr
    command = subprocess.run([sys.executable, "-m", "data.tokens", str(tiny_llama_dir)], cwd=REPO,
                             capture_output=True, text=True)
    assert command.returncode == 0 and "one token: 10/1000" in command.stdout, command.stderr


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
    from quant import resolve_model

    assert main(["gemma3-270m"], resolve=resolve_model) == 0 and "integers 0-999 that are one token: 10/1000" in capsys.readouterr().out
