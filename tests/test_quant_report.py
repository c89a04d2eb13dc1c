"""Quantization-error report: known NF4/FP4 errors on Gaussian weights, bits per parameter, the CLI."""
import json
import math

import pytest
import torch

from quant.report import error_report, main, quantization_error, relative_error


@pytest.fixture(scope="module")
def gaussian():
    return torch.randn(1024, 512, generator=torch.Generator().manual_seed(0))


def test_nf4_error_on_gaussian_is_in_the_known_range_and_below_fp4(gaussian):
    nf4 = relative_error(gaussian, "nf4", double_quant=False)
    fp4 = relative_error(gaussian, "fp4", double_quant=False)
    assert 0.09 < nf4 < 0.11  # NF4 is information-theoretically optimal for N(0, 1) blocks of 64
    assert nf4 < fp4 < 0.15
    # double quantization re-quantizes only the block scales: a tiny extra error
    assert nf4 < relative_error(gaussian, "nf4", double_quant=True) < nf4 * 1.01
    assert relative_error(gaussian, "nf4", double_quant=False, blocksize=256) > nf4  # bigger blocks, bigger error


def test_bits_per_parameter_counted_from_the_tensors(gaussian):
    assert quantization_error(gaussian, "nf4", double_quant=False)[2] == 4 + 32 / 64
    assert quantization_error(gaussian, "nf4", double_quant=True)[2] == 4 + 8 / 64 + 32 / (64 * 256)  # ~4.127
    assert quantization_error(gaussian, "fp4", double_quant=False, blocksize=128)[2] == 4 + 32 / 128


def test_error_report_aggregates_per_kind(tiny_llama):
    report = error_report(tiny_llama, layers=1)
    weights = [tiny_llama.model.layers[0].mlp.up_proj.weight]
    assert report["up_proj"]["params"] == weights[0].numel()
    assert report["up_proj"]["NF4"]["relative_error"] == pytest.approx(relative_error(weights[0], "nf4", False))
    everything = [tiny_llama.get_submodule(n).weight for n, _ in tiny_llama.named_modules()
                  if n.startswith("model.layers.0.") and n.endswith("proj")]
    err = sum(quantization_error(w, "fp4", True)[0] for w in everything)
    norm = sum(w.pow(2).sum().item() for w in everything)
    assert report["all"]["FP4+DQ"]["relative_error"] == pytest.approx(math.sqrt(err / norm))
    assert report["all"]["params"] == sum(w.numel() for w in everything)
    assert all(report[k]["NF4"]["relative_error"] < report[k]["FP4"]["relative_error"] for k in report)


def test_cli_prints_table_and_writes_json(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main([str(tiny_llama_dir), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "q_proj" in table and "down_proj" in table and "bits/param" in table and "4.500" in table
    report = json.loads(out.read_text())
    assert set(report) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "all"}
    # tiny matrices round the per-256-block nested scale up, so DQ costs a little more than 4.127 here
    assert f"{report['all']['NF4+DQ']['bits_per_param']:.3f}" in table
    assert 4.127 < report["all"]["NF4+DQ"]["bits_per_param"] < 4.14


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no model folder at")
