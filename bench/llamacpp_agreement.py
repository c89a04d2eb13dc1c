"""Whether llama.cpp answers as transformers does on the exported model: `python -m bench.llamacpp_agreement`.

    python -m bench.llamacpp_agreement --merged runs/export/merged [--gguf model-f16.gguf] [--limit 20]
        [--llama-python /tmp/llama-venv/bin/python] [--out bench/results/llamacpp_agreement/FILE.jsonl]

For --limit listings of the test split (the run's split, read from the folder's training-config.yaml), it
builds pricer's prompt and decodes --max-new-tokens tokens greedily twice: with transformers on the merged
folder (its weights upcast to float32, on CPU), and with llama.cpp on the folder's GGUF file through
llama-cpp-python (`Llama.create_completion`: a raw completion, no chat template, temperature 0). It prints
one JSON line per listing and a summary: how many texts and how many prices are identical.

llama-cpp-python is not one of pricer's requirements. --llama-python names a Python that has it (default:
this one); llama.cpp runs there, in a process of its own. Built from source it takes minutes:
`CMAKE_BUILD_PARALLEL_LEVEL=1 pip install --no-binary llama-cpp-python llama-cpp-python==0.3.36`. The
model is opened with llama.cpp's `use_extra_bufts` off: ggml's CPU "extra" buffers repack weights for AMX
and other instruction sets, and on some virtual machines that path dies with SIGILL. llama-cpp-python
0.3.36's `Llama()` has no argument for it (an unknown keyword is swallowed by its **kwargs), so the bench
sets it in the model parameters' defaults before loading. --extra-buffers keeps it on, as llama.cpp's own
tools and llama-cpp-python's server run by default.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from bench.common.served_answers import compare_rows, greedy_texts, listing_prompts, write_rows

REPO = Path(__file__).resolve().parent.parent
# Run by --llama-python: prompts in on stdin, completions out on stdout, as JSON.
LLAMA_SCRIPT = r"""
import json, sys
import llama_cpp
import llama_cpp.llama_cpp as capi
defaults = capi.llama_model_default_params
def without_extra_buffers():
    params = defaults()
    params.use_extra_bufts = job["extra_buffers"]
    return params
job = json.load(sys.stdin)
capi.llama_model_default_params = without_extra_buffers   # Llama() takes no such argument (**kwargs drop it)
llm = llama_cpp.Llama(model_path=job["gguf"], n_ctx=1024, n_threads=job["threads"], verbose=False)
texts = [llm.create_completion(p, max_tokens=job["max_tokens"], temperature=0.0, top_k=1)["choices"][0]["text"]
         for p in job["prompts"]]
json.dump({"texts": texts, "llama_cpp_python": llama_cpp.__version__}, sys.stdout)
"""


def llama_cpp_texts(python: str, gguf: Path, prompts: Sequence[str], max_tokens: int,
                    extra_buffers: bool = False) -> tuple[list[str], str]:
    """llama.cpp's greedy completions of `prompts` (run by `python`), and the llama-cpp-python version."""
    job = {"gguf": str(gguf), "prompts": list(prompts), "max_tokens": max_tokens, "threads": min(os.cpu_count() or 1, 2),
           "extra_buffers": extra_buffers}
    proc = subprocess.run([python, "-c", LLAMA_SCRIPT], input=json.dumps(job), capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeError(f"llama.cpp in {python} failed: {last}")
    answer = json.loads(proc.stdout)
    return answer["texts"], answer["llama_cpp_python"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m bench.llamacpp_agreement", description=__doc__.splitlines()[0])
    p.add_argument("--merged", required=True, help="a folder written by python -m lora.export --gguf ...")
    p.add_argument("--gguf", default="model-f16.gguf", help="the GGUF file in --merged (default model-f16.gguf)")
    p.add_argument("--data", default=str(REPO / "data" / "amazon-prices"))
    p.add_argument("--limit", type=int, default=20, help="listings of the test split (default 20)")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--llama-python", default=sys.executable, help="a Python with llama-cpp-python (default: this one)")
    p.add_argument("--extra-buffers", action="store_true",
                   help="keep llama.cpp's CPU weight repacking on, as its servers do by default (may SIGILL on VMs)")
    p.add_argument("--out", type=Path, help="also write the JSON lines here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare llama.cpp's answers with transformers' on the same listings; 0 when every price agrees, else 1."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = parse_args(argv)
    merged, gguf = Path(args.merged), Path(args.merged) / args.gguf
    if not gguf.is_file():
        print(f"error: no {args.gguf} in {merged}: export with python -m lora.export --gguf f16", file=sys.stderr)
        return 2
    tokenizer = AutoTokenizer.from_pretrained(merged)
    items, prompts, run = listing_prompts(args.data, str(merged), None, args.limit, tokenizer)
    served, version = llama_cpp_texts(args.llama_python, gguf, prompts, args.max_new_tokens, args.extra_buffers)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    reference = greedy_texts(model, tokenizer, prompts, args.max_new_tokens)
    rows, summary = compare_rows(items, reference, served, ("transformers", "llama_cpp"))
    summary.update(gguf=str(gguf), llama_cpp_python=version, extra_buffers=args.extra_buffers,
                   answer_width=run.answer_width,
                   max_new_tokens=args.max_new_tokens)
    write_rows(args.out, rows, summary)
    return 0 if summary["same_price"] == summary["listings"] else 1


if __name__ == "__main__":
    sys.exit(main())
