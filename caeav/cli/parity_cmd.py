"""`caeav parity BUNDLE`: compare a bundle with the PyTorch model it came from (`caeav.export.parity`; torch is
imported inside the command)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from caeav.errors import ExportError


def parity(
    bundle: Path = typer.Argument(..., help="bundle directory (caeav export)"),
    engine: str = typer.Option("ort", "--engine", help="ort (onnxruntime CPU) or trt (the bundle's engines)"),
    clips: Optional[Path] = typer.Option(None, "--clips", help="also compare on real clips from this folder"),
    seed: int = typer.Option(1, "--seed", help="seed of the random test inputs"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="the caeav checkpoint the bundle was "
                                              "exported from (default: the bundle's own checkpoint/)"),
) -> None:
    """Run the same inputs through PyTorch and the bundle; write the results into its manifest ("parity") and exit
    non-zero when a precision misses the bundle's tolerances."""
    if engine not in ("ort", "trt"):
        raise ExportError(f"--engine must be ort or trt, got {engine!r}")
    from caeav.export.parity import run_parity, summary_lines

    report = run_parity(bundle, engine=engine, clips=clips, seed=seed, checkpoint=checkpoint,
                        log=lambda s: typer.echo(f"  {s}", err=True))
    for line in summary_lines(report):
        typer.echo(line)
    if not report["passed"]:
        failed = {p: r["failures"] for p, r in report["precisions"].items() if r["failures"]}
        raise ExportError(f"parity failed: {failed}")
