"""Gemma's tokenizer rebuilt from its GGUF with `tokenizers` alone: the repair provisioning applies
when the tokenizer transformers saved fails its check (quant/tokenizer_check.py).

A Gemma GGUF lists the vocabulary in merge order (token i was learned before token i + 1), with
llama.cpp token types and no merges. Gemma's tokenizer is a BPE with byte fallback over that
vocabulary: the normalizer spells spaces "\u2581", there is no pre-tokenizer, `<bos>` is prepended.
transformers 5.24 rebuilds that from the GGUF and saves it faithfully. transformers 5.17 builds
a Unigram over the GGUF's scores instead (already off: "Price" -> "Pr" "ice", no `<bos>`), saves
it as a Unigram tokenizer.json, and its GemmaTokenizer reads that file back as a BPE without
merges: one token per character. Building the BPE here, from the file and not from whichever
transformers is installed, gives the same tokenizer under every version.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPACE = "\u2581"          # SentencePiece's visible space
CONTROL, USER_DEFINED = 3, 4   # llama.cpp's token types (1 is normal, 6 a byte-fallback <0xNN>)


@dataclass
class GGUFVocab:
    """The tokenizer a GGUF describes: tokens in id order, their llama.cpp types and the special ids."""

    tokens: list[str]
    types: list[int]
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int


def read_gguf_vocab(gguf_path: str | Path) -> GGUFVocab:
    """The vocabulary, token types and special token ids stored in a GGUF file's metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields

    def value(key: str):
        return fields[key].contents()

    return GGUFVocab(tokens=list(value("tokenizer.ggml.tokens")), types=list(value("tokenizer.ggml.token_type")),
                     bos_id=value("tokenizer.ggml.bos_token_id"), eos_id=value("tokenizer.ggml.eos_token_id"),
                     unk_id=value("tokenizer.ggml.unknown_token_id"), pad_id=value("tokenizer.ggml.padding_token_id"))


def bpe_merges(tokens: list[str]) -> list[tuple[str, str]]:
    """The merges a vocabulary in merge order implies: per token, in order, each split into two tokens.

    A token's splits come longest left piece first; both orders are transformers 5.24's, whose
    tokenizer this reproduces id for id.
    """
    known = set(tokens)
    return [(token[:cut], token[cut:]) for token in tokens for cut in range(len(token) - 1, 0, -1)
            if token[:cut] in known and token[cut:] in known]


def gemma_tokenizer(vocab: GGUFVocab):
    """Gemma's fast tokenizer (a `tokenizers.Tokenizer`) from a GGUF vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    # GGUF spells tokens of 2+ spaces with real spaces, but the normalizer hands the BPE "▁"s.
    tokens = [SPACE * len(t) if t and not t.strip(" ") else t for t in vocab.tokens]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=bpe_merges(tokens),
                               unk_token=tokens[vocab.unk_id], fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", SPACE)
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    # Control tokens (<bos>, <start_of_turn>, ...) are special; user-defined ones ("\n\n", "\t") are
    # matched whole before the BPE, as llama.cpp does, or the BPE would cut them up.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, vocab.types) if kind == CONTROL])
    tok.add_tokens([AddedToken(t, normalized=False)
                    for t, kind, raw in zip(tokens, vocab.types, vocab.tokens) if kind == USER_DEFINED and t == raw])
    bos = tokens[vocab.bos_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, vocab.bos_id)])
    return tok


def repair_tokenizer(gguf_path: str | Path, folder: str | Path) -> None:
    """Write Gemma's tokenizer, rebuilt from the GGUF, over the tokenizer files saved in `folder`."""
    vocab = read_gguf_vocab(gguf_path)
    folder = Path(folder)
    gemma_tokenizer(vocab).save(str(folder / "tokenizer.json"))
    config_path = folder / "tokenizer_config.json"
    old = json.loads(config_path.read_text()) if config_path.is_file() else {}
    names = {"bos_token": vocab.bos_id, "eos_token": vocab.eos_id, "unk_token": vocab.unk_id,
             "pad_token": vocab.pad_id}
    # TokenizersBackend takes tokenizer.json as it is: no class may rebuild it from a partial reading.
    config = {"tokenizer_class": "TokenizersBackend", "add_bos_token": True, "add_eos_token": False,
              **{name: vocab.tokens[i] for name, i in names.items()},
              "model_max_length": old.get("model_max_length", 32768)}
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    for stale in ("special_tokens_map.json", "tokenizer.model"):
        (folder / stale).unlink(missing_ok=True)
