"""Base models for QLoRA: bitsandbytes 4/8/16-bit loading, k-bit training prep, memory and error reports.

    from quant import resolve_model, load_base_model, prepare_for_kbit_training, memory_report, ModelError

`resolve_model("smollm2-135m")` provisions the embedded SmolLM2-135M-Instruct, `resolve_model("gemma3-270m")`
the embedded Gemma 3 270M (quant/embedded.py);
`python -m quant.report MODEL` prints NF4 vs FP4 quantization error per layer kind (quant/report.py).
bitsandbytes is imported only when a 4/8-bit model is loaded, so importing quant stays cheap.
"""
from quant.exceptions import ModelError
from quant.load import load_base_model, load_tokenizer
from quant.memory import format_memory_report, memory_report
from quant.prepare import prepare_for_kbit_training
from quant.projections import check_projections
from quant.resolve import canonical_name, resolve_model

__all__ = ["ModelError", "canonical_name", "check_projections", "format_memory_report", "load_base_model",
           "load_tokenizer", "memory_report", "prepare_for_kbit_training", "resolve_model"]
