"""Parity: the reference stack's and pricer's training losses on the Llama-3.1-8B shape, step by step.

Dropout 0, the same initial adapter weights and 20 distinct batches of 4 (random NF4 base, sequence 182, the
last 5 tokens supervised; bench.train_speed's stacks): the reference (peft, HF loss), then pricer eager, with
CUDA graphs, and with graphs + compiled layers. Prints the largest relative loss difference of each against
the reference; bf16 rounding order makes them differ a little, and the difference must not grow.

    python -m bench.parity --out DIR
    bash bench/gpu.sh parity                       # on a GPU machine, staged (bench/gpu.sh)
"""
from __future__ import annotations

import argparse
import gc

import torch

from bench.common.cli import write_result
from bench.common.llama_shapes import build_llama_4bit, completion_batch
from bench.train_speed import SEQ, plain_loop, pricer_stack, reference_stack, versions


def parity(steps: int = 20) -> dict:
    """Losses of both stacks from the same initial adapter and batches (dropout 0, so they are deterministic)."""
    batches = [completion_batch(4, SEQ, seed=100 + s) for s in range(steps)]

    def run(stack, init=None, graphs=True, compile=False):
        lm = build_llama_4bit()
        if stack == "reference":
            model, loss_fn = reference_stack(lm, dropout=0.0)
            lora = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
        else:
            model, loss_fn = pricer_stack(lm, dropout=0.0, graphs=graphs, compile=compile)
            lora = {"base_model.model." + n: p for n, p in model.named_parameters() if "lora_" in n}
        if init is None:
            init = {k: v.detach().clone() for k, v in lora.items()}
        else:
            with torch.no_grad():
                for k, p in lora.items():
                    p.copy_(init[k])
        step = plain_loop(model, loss_fn)
        losses = [float(step(ids, labels)) for ids, labels in batches]
        del model, step, lm
        gc.collect()
        torch.cuda.empty_cache()
        return losses, init

    ref, init = run("reference")
    eager, _ = run("pricer", init, graphs=False)
    graph, _ = run("pricer", init, graphs=True)
    compiled, _ = run("pricer", init, graphs=True, compile=True)
    rel = lambda a, b: max(abs(x - y) / abs(y) for x, y in zip(a, b))  # noqa: E731
    return dict(reference=ref, pricer_eager=eager, pricer_graphs=graph, pricer_compiled=compiled,
                max_rel_diff_eager=rel(eager, ref), max_rel_diff_graphs=rel(graph, ref),
                max_rel_diff_compiled=rel(compiled, ref))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench", help="folder for parity.json")
    ap.add_argument("--steps", type=int, default=20, help="batches (steps) compared")
    args = ap.parse_args()
    result = {**versions(), "parity": parity(args.steps)}
    write_result(args.out, "parity.json", result)
    par = result["parity"]
    print(f"{result['device']}, torch {result['torch']}, transformers {result['transformers']}, peft {result['peft']}, "
          f"{result['date']}\nparity over {args.steps} steps: max relative loss difference against the reference: "
          f"eager {par['max_rel_diff_eager']:.2e}, graphs {par['max_rel_diff_graphs']:.2e}, "
          f"compiled {par['max_rel_diff_compiled']:.2e}")


if __name__ == "__main__":
    main()
