"""An evaluation's --out folder as it fills: checked before any work, written batch by batch, resumable.

    check_out_dir(out)                                  # before the data or the model is read
    folder = ReportFolder.fresh(out, items, settings)   # or ReportFolder.resume(...) for --resume
    with folder.keeping():                              # Ctrl-C or a crash: says what the folder kept
        ... folder.add(predictions, seconds) after each batch ...
    report = folder.finish(name)                        # report.json, predictions.csv and chart.png whole

After each batch its rows are appended to predictions.csv (whole or not at all, flushed to
disk), then report.json is rewritten atomically with the metrics of the rows so far,
`"complete": false`, `n` the rows scored and `total` the items planned. The report is written
after the rows, so its n never counts a row that is not on disk, and whatever stops the run (Ctrl-C,
a crash, a killed process, a full disk) leaves a valid partial evaluation. Resuming keeps the first
n rows (a torn or uncounted row after them is dropped and predicted again), checks that they are this
run's items and that the settings are the same, fingerprint included (the sha256 of the adapter's
weights and of the items picked), and continues from item n with the same batches, so the finished
files are those of an uninterrupted run, never a mix of two evaluations. For the same reason a fresh
evaluation refuses a folder holding an earlier one's files, unless --overwrite moves them aside.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from predictors.base import Prediction
from evaluation.pricing import mass_cell
from evaluation.report import (COLUMNS, OLD_COLUMNS, ReportError, build_report, cents, cents_interval,
                               prediction_rows, read_report, write_report)
from utils.atomic import atomic_append, atomic_write_text
from utils.csv_cells import read_text_cell
from utils.move_aside import move_aside
from utils.provenance import git_state, package_versions

FILES = ("report.json", "predictions.csv", "chart.png")


class OutDirError(ValueError):
    """An --out folder evaluate.py cannot write its files in (one line: which and why)."""


class OutputWriteError(RuntimeError):
    """A file of --out could not be written mid-run (a full disk, ...): one line saying what the folder kept."""


NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)   # EFBIG: over the file size limit (ulimit -f)


def check_out_dir(out: str | os.PathLike) -> None:
    """Refuse an --out that is a file, lies under one, holds a folder where a report file goes, or is not writable."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OutDirError(f"--out {out} is a file, not a folder: pass a new or existing folder")
    for name in FILES:
        if (path / name).is_dir():
            raise OutDirError(f"{path / name} is a folder where evaluate.py writes a file: pass another --out")
    probe = path
    while not os.path.lexists(probe):
        probe = probe.parent
    if not probe.is_dir():
        kind = "a file, not a folder" if probe.is_file() else "not a folder"
        raise OutDirError(f"--out {out} cannot be created: {probe} is {kind}")
    # Try it: permission bits say nothing of root, read-only mounts or ACLs.
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".pricer-write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutDirError(f"--out {out} is not writable ({probe}: {e.strerror}): pass a folder you can write "
                          "to") from None


class ReportFolder:
    """One evaluation's --out folder, filled batch by batch (see the module docstring).

    `device` is what report.json says the predictions ran on; set it once the model is loaded.
    """

    def __init__(self, out: str | os.PathLike, items: Sequence[Any], settings: dict, failures_as_zero: bool):
        self.out, self.items, self.failures_as_zero = Path(out), items, failures_as_zero
        settings = {**settings, "items_sha256": items_sha256(items)}
        self.settings: dict = json.loads(json.dumps(settings))   # as report.json holds them: lists, not tuples
        self.guesses: list[float | None] = []
        self.intervals: list[tuple | None] = []    # the predictor's (low, high) per item, None where it states none
        self.masses: list[float | None] = []       # the share of the model's probability searched per item (4 places)
        self.log_axes = True
        self.seconds = 0.0
        self.mass: float | None = None    # the mean Prediction.mass so far: report.json's search_mass
        self.device: str | None = None
        self.started = False
        self.kept = 0    # the rows report.json on disk counts: what a --resume would continue from
        self.code = {"git": git_state(), "versions": package_versions()}   # what produced these numbers

    @property
    def done(self) -> int:
        """How many items (the first ones, in order) have their predictions in the folder."""
        return len(self.guesses)

    @classmethod
    def fresh(cls, out: str | os.PathLike, items: Sequence[Any], settings: dict, failures_as_zero: bool = False,
              overwrite: bool = False) -> ReportFolder:
        """A new evaluation; ReportError when `out` holds an earlier one's files, which `overwrite` moves aside."""
        folder = cls(out, items, settings, failures_as_zero)
        kept = [name for name in FILES if (folder.out / name).exists()]
        if kept and not overwrite:
            raise ReportError(f"{folder.out} holds an earlier evaluation ({', '.join(kept)}{folder._count_kept()}): "
                              "continue it with --resume, or start afresh with --overwrite (the earlier one is moved "
                              "aside, not deleted)")
        if kept:
            out = folder.out
            aside = move_aside([out / name for name in kept], out.with_name(f"{out.name}.previous"))
            print(f"note: --overwrite: moved the earlier evaluation's {', '.join(kept)} from {folder.out} to {aside}",
                  file=sys.stderr)
        return folder

    def _count_kept(self) -> str:
        """How many items the report.json in the folder counts, as '; N of M items' (empty when unreadable)."""
        with contextlib.suppress(ReportError):
            old = read_report(self.out / "report.json") if (self.out / "report.json").is_file() else {}
            if "n" in old:
                return f"; {old['n']!s:.12} of {old.get('total')!s:.12} items"
        return ""

    @classmethod
    def resume(cls, out: str | os.PathLike, items: Sequence[Any], settings: dict,
               failures_as_zero: bool = False) -> ReportFolder:
        """The evaluation in `out`, to be continued: ReportError when it was made otherwise or of other items."""
        folder = cls(out, items, settings, failures_as_zero)
        report_path, rows_path = folder.out / "report.json", folder.out / "predictions.csv"
        if not report_path.is_file() or not rows_path.is_file():
            raise ReportError(f"nothing to resume in {out}: it holds no report.json and predictions.csv of an "
                              "evaluation; run without --resume")
        saved = read_report(report_path)
        folder._check_settings(saved)
        n = saved.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= len(items):
            raise ReportError(f"{report_path}: n is {n!r:.40}, not a count of this run's {len(items)} items; "
                              "run without --resume")
        folder.guesses, folder.intervals, folder.masses = read_guesses(rows_path, items, n)
        folder.seconds = float(saved.get("seconds") or 0.0)
        folder.mass, folder.device = saved.get("search_mass"), saved.get("device")
        # Rows after the n the report counts (a torn row, a batch whose report was not written) go.
        with folder._writing(rows_path):
            folder._write_rows()
        folder.started, folder.kept = True, n
        return folder

    def _check_settings(self, saved: dict) -> None:
        differ = [f"{key} {_short(value)} (report.json has {_short(saved.get(key))})"
                  for key, value in self.settings.items() if saved.get(key) != value]
        if differ:
            raise ReportError(f"{self.out / 'report.json'} was made with other settings; this run has "
                              f"{', '.join(differ[:3])}: resume with the same options, or drop --resume to start over")

    def _write_rows(self) -> None:
        items = self.items[:self.done]
        atomic_write_text(self.out / "predictions.csv", prediction_rows(
            [it.title for it in items], [it.price for it in items], self.guesses, self.failures_as_zero, header=True,
            intervals=self.intervals, masses=self.masses))

    def add(self, predictions: Sequence[Prediction], seconds: float) -> None:
        """Append the next items' rows to predictions.csv (flushed to disk), then rewrite report.json to count them."""
        if not self.started:
            with self._writing(self.out / "predictions.csv"):
                self.out.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    (self.out / "chart.png").unlink()   # an earlier run's, which the new report no longer matches
                self._write_rows()
            self.started = True
        batch = self.items[self.done:self.done + len(predictions)]
        guesses = [cents(p.price) for p in predictions]
        intervals = [cents_interval((p.low, p.high)) if p.low is not None else None for p in predictions]
        with self._writing(self.out / "predictions.csv"):
            atomic_append(self.out / "predictions.csv", prediction_rows(
                [it.title for it in batch], [it.price for it in batch], guesses, self.failures_as_zero,
                intervals=intervals, masses=[mass_cell(p.mass) for p in predictions]))
        masses = [p.mass for p in predictions]
        if masses and None not in masses:
            # A running mean, so that a resumed run, starting from the saved one, adds up the same floats.
            self.mass = ((self.mass or 0.0) * self.done + sum(masses)) / (self.done + len(masses))
        self.guesses += guesses
        self.intervals += intervals
        self.masses += [mass_cell(m) for m in masses]
        self.seconds += seconds
        truths = [it.price for it in self.items[:self.done]]
        report = build_report(truths, self.guesses, self._provenance(), self.failures_as_zero, len(self.items),
                              self._stated_intervals())
        with self._writing(self.out / "report.json"):
            atomic_write_text(self.out / "report.json", json.dumps({**report, "complete": False}, indent=2) + "\n")
        self.kept = self.done

    def _stated_intervals(self) -> list | None:
        """The intervals, when the predictor states any (a report of a point predictor has no interval section)."""
        return self.intervals if any(iv is not None for iv in self.intervals) else None

    def _provenance(self) -> dict:
        return {**self.settings, **({} if self.mass is None else {"search_mass": self.mass}),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(self.seconds, 3),
                "items_per_s": round(self.done / self.seconds, 3) if self.seconds > 0 else None,
                "device": self.device, "code": self.code}

    def finish(self, name: str) -> dict:
        """Write the complete report.json, predictions.csv and chart.png (titled `name`); return the report."""
        titles, truths = [it.title for it in self.items], [it.price for it in self.items]
        with self._writing(self.out):
            return write_report(self.out, titles, truths, self.guesses, self._provenance(), name,
                                self.failures_as_zero, self._stated_intervals(), self.log_axes, self.masses)

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """Turn an OSError while writing `path` into one OutputWriteError line: what failed and what was kept."""
        try:
            yield
        except OSError as e:
            kept = (f"kept {self.kept} of {len(self.items)} predictions in {self.out}" if self.started
                    else f"no batch finished; {self.out} holds none of this run's rows")
            fix = "free some disk space" if e.errno in NO_SPACE else "fix that"
            raise OutputWriteError(f"could not write {e.filename or path} ({e.strerror or e}); {kept}: {fix}, then "
                                   "run the same command with --resume") from None

    @contextlib.contextmanager
    def keeping(self) -> Iterator[None]:
        """Run the batches; on Ctrl-C raise KeyboardInterrupt saying what was kept, on a crash print it first."""
        try:
            yield
        except OutputWriteError:
            raise   # its message says what was kept
        except BaseException as e:
            kept = (f"kept {self.done} of {len(self.items)} predictions in {self.out}; run the same command with "
                    "--resume to continue" if self.started else f"no batch finished; {self.out} is as it was")
            if isinstance(e, KeyboardInterrupt):
                raise KeyboardInterrupt(f"interrupted: {kept}") from None
            print(f"stopped by {type(e).__name__}: {kept}", file=sys.stderr)
            raise


def _short(value: Any) -> str:
    """A setting's value for a one-line message: its repr, cut to 40 characters (a sha256 to its first 12 digits)."""
    if isinstance(value, str) and len(value) == 64:
        return repr(value[:12] + "...")
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def items_sha256(items: Sequence[Any]) -> str:
    """sha256 of the items in evaluation order (title, text, price): two evaluations of other items never mix."""
    digest = hashlib.sha256()
    for it in items:
        digest.update(json.dumps([it.title, it.text, f"{it.price:.2f}"]).encode("utf-8") + b"\n")
    return digest.hexdigest()


def _price_or_none(text: str, path: Path, i: int) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        raise ReportError(f"{path}: row {i} has {text!r:.20} where a price goes; run without --resume") from None


def read_guesses(path: Path, items: Sequence[Any],
                 n: int) -> tuple[list[float | None], list[tuple | None], list[float | None]]:
    """The guesses, intervals and searched masses of the first n rows of predictions.csv, checked to be rows of
    the first n items; a file written before rows held their mass (OLD_COLUMNS) gives None for each mass."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(itertools.islice(csv.reader(f), n + 1))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: not a predictions file evaluate.py wrote ({e}); run without --resume") from None
    if not rows or tuple(rows[0]) not in (COLUMNS, OLD_COLUMNS):
        raise ReportError(f"{path}: its header is not {','.join(COLUMNS)}; run without --resume")
    width = len(rows[0])
    if len(rows) - 1 < n:
        raise ReportError(f"{path}: holds {len(rows) - 1} rows but report.json counts {n}; run without --resume")
    guesses, intervals, masses = [], [], []
    for i, (row, item) in enumerate(zip(rows[1:], items), 1):
        title = read_text_cell(row[0]) if row else ""
        if len(row) != width or title != item.title or row[1] != f"{item.price:.2f}":
            raise ReportError(f"{path}: row {i} is {title!r:.60}, but item {i} of this run is "
                              f"{item.title!r:.60}: the data, split or sample changed; run without --resume")
        guesses.append(_price_or_none(row[2], path, i))
        low, high = _price_or_none(row[5], path, i), _price_or_none(row[6], path, i)
        intervals.append(None if low is None else (low, high))
        masses.append(_price_or_none(row[7], path, i) if width > 7 else None)
    return guesses, intervals, masses
