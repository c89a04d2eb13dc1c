"""Prediction speed on the Llama-3.1-8B shape: the course's one-at-a-time generate against pricer's batched
greedy and expected-price predictors, in items/s and as a multiple of one-at-a-time.

256 held-out prompts (about 196 tokens) with a tokenizer that has single tokens for 0-999, like Llama 3, on a
random NF4 base (bench.common.llama_shapes); then the expected predictor again with compiled decoder layers (its
warm-up runs every batch shape first). Also how often greedy agrees with one-at-a-time on 16 items.

    python -m bench.predict_speed --out DIR
    bash bench/gpu.sh predict_speed                # on a GPU machine, staged (bench/gpu.sh)
"""
from __future__ import annotations

import argparse
import time

import torch

from bench.common.cli import write_result
from bench.common.llama_shapes import build_llama_4bit
from bench.train_speed import ROOT, versions


def predict(n_items: int = 256, n_single: int = 16) -> dict:
    """items/s of the course's one-at-a-time generate vs pricer's batched greedy and expected predictors."""
    from data import load_items, split_items, test_prompt
    from predictors import predict_expected, predict_greedy, predict_one_at_a_time
    from quant.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer("triples")  # single tokens for 0-999, like Llama 3
    tokenizer.pad_token = tokenizer.eos_token
    lm = build_llama_4bit()
    lm.config.use_cache = True
    with torch.no_grad():  # the random head may only pick tokens this tokenizer has
        lm.lm_head.weight[len(tokenizer):] = 0
    lm.generation_config.pad_token_id = tokenizer.eos_token_id
    items = split_items(load_items(ROOT / "data" / "amazon-prices", verbose=False)).test[:n_items]
    prompts = [test_prompt(it, tokenizer, 160) for it in items]
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    rows = {}

    def timed(name, fn, n, warmup=lambda: predict_greedy(lm, tokenizer, prompts[:8], batch_size=8)):
        warmup()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        rows[name] = round(n / (time.perf_counter() - t0), 2)
        return out

    single = timed("one_at_a_time", lambda: predict_one_at_a_time(lm, tokenizer, prompts[:n_single]), n_single)
    greedy = timed("greedy_b64", lambda: predict_greedy(lm, tokenizer, prompts, batch_size=64, max_new_tokens=4),
                   len(prompts))
    timed("greedy_b128", lambda: predict_greedy(lm, tokenizer, prompts, batch_size=128, max_new_tokens=4),
          len(prompts))
    expected = timed("expected_b64", lambda: predict_expected(lm, tokenizer, prompts, batch_size=64), len(prompts))
    from training.speed import compile_decoder_layers
    compile_decoder_layers(lm)
    # The warm-up runs every batch once, so that each batch shape is compiled before the timing
    # (a warm-up on fewer batches times a recompile instead).
    compiled = timed("expected_b64_compiled", lambda: predict_expected(lm, tokenizer, prompts, batch_size=64),
                     len(prompts), warmup=lambda: predict_expected(lm, tokenizer, prompts, batch_size=64))
    agree = sum(a == b for a, b in zip(single, greedy[:n_single]))
    return dict(items_per_s=rows, speedup={k: round(v / rows["one_at_a_time"], 1) for k, v in rows.items()},
                greedy_agrees_with_one_at_a_time=f"{agree}/{n_single}",
                compiled_vs_eager_expected_max_rel_diff=max(abs(a - b) / abs(b) for a, b in zip(compiled, expected)
                                                           if a is not None and b),
                prompt_tokens=dict(mean=round(sum(lengths) / len(lengths)), max=max(lengths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench", help="folder for predict_speed.json")
    ap.add_argument("--items", type=int, default=256, help="held-out prompts priced by each batched predictor")
    args = ap.parse_args()
    result = {**versions(), "predict": predict(args.items)}
    write_result(args.out, "predict_speed.json", result)
    print(f"{result['device']}, torch {result['torch']}, transformers {result['transformers']}, {result['date']}")
    for name, rate in result["predict"]["items_per_s"].items():
        print(f"{name:>24}: {rate:>7} items/s  x{result['predict']['speedup'][name]}")
    print(f"greedy agrees with one-at-a-time on {result['predict']['greedy_agrees_with_one_at_a_time']}")


if __name__ == "__main__":
    main()
