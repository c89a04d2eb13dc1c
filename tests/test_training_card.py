"""training.card: the model card says how the adapter was trained (QLoRA or 16-bit LoRA), promises no section it
does not hold, and gives a vLLM command that vLLM accepts, on the base the README serves."""
import re
from pathlib import Path

import pytest

from training.card import VLLM_LORA_RANKS, model_card, vllm_max_lora_rank
from training.config import Config

REPO = Path(__file__).resolve().parent.parent
DATA = {"items": 10, "split": "ab12"}


def card(**model) -> str:
    cfg = Config()
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return model_card(cfg, "run", {}, DATA)


def test_a_16_bit_run_is_not_called_qlora():
    sixteen, four = card(bits=16), card(bits=4)
    assert "QLoRA" not in sixteen and "qlora" not in sixteen and "LoRA over a 16-bit base (not quantized)" in sixteen
    assert "in 16-bit (bfloat16 weights)" in sixteen
    assert "QLoRA: LoRA over a bitsandbytes 4-bit nf4 base" in four and "tags: [lora, qlora," in four
    assert "LoRA over a bitsandbytes 8-bit base" in card(bits=8)


def test_no_empty_sections_and_no_promise_of_a_missing_run_json():
    text = card()
    assert "## Evaluations" not in text
    assert "`run.json` in the folder of the run that trained it (a copied adapter does not carry it)" in text
    headings = re.findall(r"^## .*$", text, flags=re.M)
    for heading, after in zip(headings, text.split("\n## ")[1:]):
        assert after.split("\n", 1)[1].strip(), f"{heading} is empty"


@pytest.mark.parametrize("r, rank", [(1, 1), (2, 8), (8, 8), (9, 16), (16, 16), (33, 64), (300, 320), (512, 512)])
def test_max_lora_rank_is_the_smallest_value_vllm_accepts(r, rank):
    assert vllm_max_lora_rank(r) == rank and rank in VLLM_LORA_RANKS


def test_vllm_command_matches_the_readme():
    """The card serves an embedded model's adapter on the embedded folder, as the README's command does."""
    cfg = Config()
    cfg.lora.r = 24
    text = model_card(cfg, "run", {}, DATA)
    command = re.search(r"^vllm serve .*$", text, flags=re.M).group(0)
    assert command == ("vllm serve ~/.cache/pricer/smollm2-135m-instruct --enable-lora "
                       "--lora-modules pricer=ADAPTER_DIR --max-lora-rank 32")
    readme = (REPO / "README.md").read_text()
    assert "~/.cache/pricer/smollm2-135m-instruct --enable-lora" in readme
    cfg.lora.r = 600
    assert "vllm serve" not in model_card(cfg, "run", {}, DATA) and "merge it" in model_card(cfg, "run", {}, DATA)


def test_shipped_cards_say_what_the_generator_says():
    """The shipped adapters' cards carry the generator's Use section and a rank vLLM accepts."""
    for name in ("smollm2-135m-pricer", "gemma3-270m-pricer"):
        text = (REPO / "adapters" / name / "README.md").read_text()
        rank = int(re.search(r"--max-lora-rank (\d+)", text).group(1))
        r = int(re.search(r"- LoRA: r (\d+)", text).group(1))
        assert rank == vllm_max_lora_rank(r), name
        assert "beside the run" not in text and "QLoRA: LoRA over a bitsandbytes 4-bit" in text
