"""Run logging (rank 0 only): a rich progress bar with loss and throughput, `metrics.csv` (one row per epoch) and
TensorBoard event files under `<run>/tensorboard/`.

    log = RunLogger(run_dir, enabled=rank == 0)
    with log.progress(total_items, f"epoch {epoch}") as bar:
        bar.advance(items, loss=1.23)
    log.epoch_row({"epoch": 1, "train_loss": ..., "val_accuracy": ...})
    log.scalars({"train/loss": 1.2}, step)
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Optional

from caeav.files import atomic_file


class _Bar:
    """One progress bar; `advance` also shows the running loss and items per second."""

    def __init__(self, progress, task_id):
        self.progress, self.task_id = progress, task_id
        self.start, self.items = time.perf_counter(), 0

    def advance(self, items: int, **fields) -> None:
        self.items += items
        text = "  ".join(f"{k} {v:.4g}" for k, v in fields.items())
        if self.progress is not None:
            self.progress.update(self.task_id, advance=items, stats=f"{text}  {self.rate:.2f} clips/s")

    @property
    def rate(self) -> float:
        return self.items / max(time.perf_counter() - self.start, 1e-9)


class _BarContext:
    def __init__(self, logger: "RunLogger", total: int, title: str):
        self.logger, self.total, self.title = logger, total, title
        self.progress = None

    def __enter__(self) -> _Bar:
        task_id = None
        if self.logger.enabled and self.logger.show_progress:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(file=sys.stderr)
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[stats]}"), console=console,
                                     transient=not console.is_terminal)
            self.progress.start()
            task_id = self.progress.add_task(self.title, total=self.total, stats="")
        return _Bar(self.progress, task_id)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


class RunLogger:
    """Writes nothing unless `enabled` (rank 0); `show_progress=False` keeps the console quiet (tests)."""

    def __init__(self, run_dir: Path, enabled: bool = True, show_progress: bool = True):
        self.run_dir, self.enabled, self.show_progress = Path(run_dir), enabled, show_progress
        self._writer = None
        self._columns: Optional[list[str]] = None

    def progress(self, total: int, title: str) -> _BarContext:
        return _BarContext(self, total, title)

    def info(self, text: str) -> None:
        if self.enabled and self.show_progress:
            print(text, file=sys.stderr, flush=True)

    def _tb(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def scalars(self, values: dict, step: int) -> None:
        if not self.enabled:
            return
        writer = self._tb()
        for key, value in values.items():
            writer.add_scalar(key, float(value), step)

    def epoch_row(self, row: dict) -> None:
        """Append one row to metrics.csv (columns fixed by the first row written in this run directory)."""
        if not self.enabled:
            return
        path = self.run_dir / "metrics.csv"
        if self._columns is None and path.is_file():
            with open(path, newline="") as f:
                self._columns = next(csv.reader(f), None)
        new = self._columns is None
        if new:
            self._columns = list(row)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self.scalars({f"epoch/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"},
                     int(row.get("epoch", 0)))

    def truncate(self, last_epoch: int) -> None:
        """Drop metrics.csv rows after `last_epoch` (a resumed run repeats the epochs its checkpoint did not cover)."""
        path = self.run_dir / "metrics.csv"
        if not self.enabled or not path.is_file():
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return
        keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= last_epoch]
        with atomic_file(path, text=True) as f:
            csv.writer(f).writerows(keep)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
