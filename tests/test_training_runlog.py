"""training.runlog: the progress bar counts every step; metrics.jsonl gets one row per step."""
from __future__ import annotations

import json

from training.config import Config
from training.runlog import RunLog


class OneProcess:
    is_main_process = True

    def print(self, *args):
        pass


def test_the_bar_and_the_log_count_every_step(tmp_path):
    cfg = Config()
    log = RunLog(OneProcess(), cfg, tmp_path, total_steps=5, step=1)
    with log:
        for step in (2, 3, 4):
            record = {"step": step, "loss": 1.0, "lr": 1e-4, "grad_norm": 0.5, "tokens_per_s": 10.0, "peak_mem_mb": 1.0}
            if step == 3:
                record["val_loss"] = 0.9
            log.write(record)
        assert log.bar.n == 4      # started at step 1, three steps written
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4] and all("elapsed" in r for r in rows)
    assert log.last_validation["step"] == 3 and (tmp_path / "curves.png").is_file()
