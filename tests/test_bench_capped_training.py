"""bench.capped_training: the batch search, with a memory model standing in for the GPU, and one cell on CPU."""
import math

import bench.capped_training as capped


def fake_fits(cap, base=10, per_row=3, lie=0):
    """fits() of a model whose peak is base + per_row * batch (plus `lie` beyond batch 2, an underestimate)."""
    def fits(step, batch, vocab, device, tries=2):
        peak = base + per_row * batch + (lie if batch > 2 else 0)
        return peak if peak <= cap else None
    return fits


def test_largest_batch_from_the_measured_cost_of_a_row(monkeypatch):
    monkeypatch.setattr(capped, "fits", fake_fits(cap=1000))
    batch, tries = capped.largest_batch(None, 100, "cuda", cap=1000)
    assert batch == 1 + math.floor((0.98 * 1000 - 13) / 3) == 323
    assert [t["batch"] for t in tries] == [1, 2, 323]


def test_largest_batch_steps_down_when_the_prediction_does_not_fit(monkeypatch):
    monkeypatch.setattr(capped, "fits", fake_fits(cap=1000, lie=200))
    batch, tries = capped.largest_batch(None, 100, "cuda", cap=1000)
    assert [t["batch"] for t in tries] == [1, 2, 323, 274, 232]  # down by 15% until it fits
    assert batch == 232 and tries[-1]["peak_gb"] is not None and tries[-2]["peak_gb"] is None


def test_batch_one_too_big_is_reported(monkeypatch):
    monkeypatch.setattr(capped, "fits", fake_fits(cap=5))
    assert capped.largest_batch(None, 100, "cuda", cap=5) == (0, [{"batch": 1, "peak_gb": None}])


def test_a_tiny_cell_trains_on_cpu_with_falling_loss():
    tiny = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=500)
    cell = capped.one_cell("pricer", "8b", 1, steps=6, lr=1e-3, device="cpu", batch=2, **tiny)
    assert cell["finite"] and cell["falling"] and len(cell["losses"]) == 6
    assert cell["trainable"] == 2 * 32 * ((64 + 64) * 2 + (64 + 32) * 2)  # r 32 on q, o (64x64) and k, v (64x32)
