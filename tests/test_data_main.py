"""`python -m data`: statistics and the histogram."""
import json
import re

from data.__main__ import main, quantiles


def test_quantiles_nearest_rank():
    assert quantiles([5.0, 1.0, 3.0, 2.0, 4.0], (0.0, 0.5, 1.0)) == {0.0: 1.0, 0.5: 3.0, 1.0: 5.0}


def test_cli_statistics_and_histogram(tmp_path, tiny_llama_dir, capsys):
    src = tmp_path / "items.jsonl"
    rows = [{"title": f"t{i}", "text": f"t{i}\nbody", "price": p, "category": c}
            for i, (p, c) in enumerate([(1.0, "A"), (2.0, "A"), (3.0, "B"), (4.0, None), (5000.0, "B")])]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hist = tmp_path / "prices.png"
    assert main([str(src), "--hist", str(hist), "--tokenizer", str(tiny_llama_dir)]) == 0
    out = capsys.readouterr().out
    assert "loaded: kept 4 of 5: 1 price out of range" in out
    assert re.search(r"items.jsonl +4\n", out) and re.search(r" A +2\n", out) and re.search(r"\(none\) +1\n", out)
    assert "price: p0 $1.00" in out and "p100 $4.00" in out and "mean $2.50" in out
    assert "text tokens:" in out and "training tokens" in out
    assert hist.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_error_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nothing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
