"""Quantization-error report: how far NF4 and FP4 (with and without double quantization) move each layer kind.

    python -m quant.report smollm2-135m [--layers N] [--blocksize 64] [--json out.json]

For every q/k/v/o/gate/up/down weight of the 16-bit model, quantize it directly with
bitsandbytes (the same kernels a 4-bit load uses, without reloading the model per setting),
de-quantize, and measure the relative Frobenius error ||W - deq(q(W))|| / ||W||, aggregated per
kind as sqrt(sum ||E||^2 / sum ||W||^2). Bits per parameter are counted from the tensors the
quantizer returns: 4 bits of code plus the scale statistics (fp32 absmax per block, or with double
quantization an 8-bit absmax per block plus an fp32 absmax per 256 blocks). The 16- and 256-entry
lookup tables are a fixed ~1 KB per tensor and are left out, since they do not grow with the weight.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from quant.exceptions import ModelError
from quant.projections import LAYER_KINDS, check_projections

SETTINGS = (("nf4", False), ("nf4", True), ("fp4", False), ("fp4", True))


def quantization_error(weight: torch.Tensor, quant_type: str = "nf4", double_quant: bool = True,
                       blocksize: int = 64) -> tuple[float, float, float]:
    """(squared error, squared norm, bits per parameter) of bitsandbytes 4-bit quantization of `weight`."""
    import bitsandbytes.functional as F

    packed, state = F.quantize_4bit(weight, blocksize=blocksize, quant_type=quant_type,
                                    compress_statistics=double_quant)
    restored = F.dequantize_4bit(packed, state).float()
    reference = weight.float()
    stats = [state.absmax] + ([state.state2.absmax] if state.nested else [])
    stored_bits = 8 * (packed.numel() * packed.element_size() + sum(t.numel() * t.element_size() for t in stats))
    return ((restored - reference).pow(2).sum().item(), reference.pow(2).sum().item(),
            stored_bits / weight.numel())


def relative_error(weight: torch.Tensor, quant_type: str = "nf4", double_quant: bool = True,
                   blocksize: int = 64) -> float:
    """Relative Frobenius error ||W - deq(q(W))|| / ||W|| of one weight matrix."""
    err, norm, _ = quantization_error(weight, quant_type, double_quant, blocksize)
    return math.sqrt(err / norm)


def error_report(model: torch.nn.Module, layers: int | None = None, blocksize: int = 64) -> dict:
    """Per layer kind and setting: relative error, bits per parameter and parameter count."""
    names = check_projections(model, LAYER_KINDS)
    totals: dict = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0, 0.0]))  # kind -> setting -> err, norm, bits
    params: dict = defaultdict(int)
    for name in names:
        index = re.search(r"\.(\d+)\.", name)
        if layers is not None and index is not None and int(index.group(1)) >= layers:
            continue
        weight = model.get_submodule(name).weight.detach()
        kind = name.rsplit(".", 1)[-1]
        params[kind] += weight.numel()
        for setting in SETTINGS:
            err, norm, bits = quantization_error(weight, setting[0], setting[1], blocksize)
            for key in (kind, "all"):
                acc = totals[key][setting]
                acc[0] += err
                acc[1] += norm
                acc[2] += bits * weight.numel()
    params["all"] = sum(params.values())
    return {kind: {"params": params[kind], **{_label(s): {"relative_error": math.sqrt(e / n), "bits_per_param": b / params[kind]}
                                              for s, (e, n, b) in by_setting.items()}}
            for kind, by_setting in totals.items()}


def format_error_report(report: dict) -> str:
    """A fixed-width table: one row per layer kind, one column per setting, then bits per parameter."""
    labels = [_label(s) for s in SETTINGS]
    lines = [f"{'kind':<10}{'params':>10}" + "".join(f"{label:>10}" for label in labels)]
    for kind in [k for k in (*LAYER_KINDS, "all") if k in report]:
        row = report[kind]
        lines.append(f"{kind:<10}{row['params'] / 1e6:>9.2f}M"
                     + "".join(f"{row[label]['relative_error']:>10.4f}" for label in labels))
    lines.append(f"{'bits/param':<20}" + "".join(f"{report['all'][label]['bits_per_param']:>10.3f}" for label in labels))
    return "\n".join(lines)


def _label(setting: tuple[str, bool]) -> str:
    return setting[0].upper() + ("+DQ" if setting[1] else "")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: load MODEL in 16-bit on CPU and print the error table."""
    parser = argparse.ArgumentParser(prog="python -m quant.report", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="embedded name (smollm2-135m), local checkpoint folder, or hub id")
    parser.add_argument("--layers", type=int, default=None, help="only the first N decoder layers")
    parser.add_argument("--blocksize", type=int, default=64, help="quantization block size (default 64)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    from quant.load import check_bitsandbytes, load_base_model

    try:
        check_bitsandbytes(4, torch.device("cpu"), torch.bfloat16)
        model, _ = load_base_model(args.model, bits=16, compute_dtype=torch.bfloat16, device="cpu", verbose=False)
        started = time.monotonic()
        report = error_report(model, args.layers, args.blocksize)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"4-bit quantization error of {args.model} against its bf16 weights "
          f"(relative Frobenius, blocksize {args.blocksize}, {time.monotonic() - started:.0f}s)")
    print(format_error_report(report))
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
