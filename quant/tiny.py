"""Tiny random checkpoints built in code: for tests, benchmarks and quick checks, no download.

`build_tiny_llama(path, numbers=...)` writes a real checkpoint folder (safetensors weights,
config.json, tokenizer files) that every loader in pricer reads like a hub model:
- numbers="digits": every digit is its own token, like SmolLM2's tokenizer;
- numbers="triples": 0-999 are single tokens and longer numbers split into 1-3 digit
  groups, like Llama 3's.
The model has Llama's real module names (q/k/v/o_proj, gate/up/down_proj), GQA (4 query
heads, 2 key/value heads) and untied embeddings, so code written for Llama 3.1 8B runs on it.

`build_tiny_gemma(path)` writes a tiny Gemma 3 (Gemma3ForCausalLM: sliding and full attention
layers, one key/value head, q/k norms, embeddings scaled by sqrt(hidden)) with a tokenizer that
writes numbers as Gemma's does (`tiny_gemma_tokenizer`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

CORPUS = [
    "How much does this cost to the nearest dollar?",
    "Price is $12.00", "Price is $999.00", "Price is $0.99",
    "Stainless steel refrigerator water filter replacement, fits most models.",
    "Acoustic guitar strings, phosphor bronze, light gauge, three pack.",
    "Cordless drill with two batteries, charger and carrying case.",
    "Kids toy building blocks set, 500 pieces, compatible with major brands.",
    "Office desk organizer with drawers, black mesh metal.",
    "Software license for photo editing, one user, download.",
    "Dimensions 10 x 4 x 3 inches; weight 2.5 pounds; manufacturer Acme.",
    "The quick brown fox jumps over the lazy dog. Brand new, sealed box.",
]
SPACE = "\u2581"   # SentencePiece's visible space, as Gemma's vocabulary spells " "


def tiny_tokenizer(numbers: str = "digits"):
    """A byte-level BPE trained on a few listing-like lines; numbers as `numbers` says (see the module doc)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    if numbers == "triples":
        # Added tokens are matched leftmost-longest before pre-tokenization: "1234" -> "123" "4".
        from tokenizers import AddedToken
        tok.add_tokens([AddedToken(str(i), normalized=False) for i in range(1000)])
    elif numbers != "digits":
        raise ValueError(f"numbers must be 'digits' or 'triples', not {numbers!r}")
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_gemma_tokenizer():
    """A small BPE that writes text as Gemma's does: `<bos>` first, " $" one token, one token per digit."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # Gemma's ids 0-3 are <pad>, <eos>, <bos>, <unk>; a pad distinct from EOS, and <bos> prepended.
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    # SentencePiece-style spaces: " " is spelled "▁" and starts the next token (" $" is one token,
    # "▁$"), with no space added before the text. Gemma's vocabulary has no multi-digit tokens,
    # so every digit is its own token; here a pre-tokenizer keeps the small BPE from merging digits.
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(SPACE, behavior="merged_with_next"),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.Fuse()])
    alphabet = [chr(c) for c in range(33, 127)] + [SPACE, "\n", "\t"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos>:1 $B:1", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>")


def build_tiny_gemma(path: str | os.PathLike, seed: int = 0, hidden: int = 64, layers: int = 2,
                     tied: bool = True, sliding_window: int = 512) -> Path:
    """Write a tiny random Gemma 3 checkpoint (model + `tiny_gemma_tokenizer`) to `path` and return it.

    Layers alternate sliding and full attention. `tied` shares the embedding with the output
    head, as Gemma does; tests that set logits by hand need them apart.
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    path = Path(path)
    tokenizer = tiny_gemma_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=sliding_window, max_position_embeddings=1024, tie_word_embeddings=tied,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return _save_random(Gemma3ForCausalLM, config, tokenizer, path, seed)


def build_tiny_llama(path: str | os.PathLike, numbers: str = "digits", seed: int = 0,
                     hidden: int = 64, layers: int = 2) -> Path:
    """Write a tiny random Llama checkpoint (model + tokenizer) to `path` and return it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = tiny_tokenizer(numbers)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return _save_random(LlamaForCausalLM, config, tokenizer, path, seed)


def _save_random(model_class, config, tokenizer, path: Path, seed: int) -> Path:
    """Build `model_class(config)` with seeded random weights, save it and the tokenizer to `path`."""
    torch.manual_seed(seed)
    model = model_class(config)
    # Random init leaves tiny weights; widen them a little so outputs differ from token to token.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.05)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
