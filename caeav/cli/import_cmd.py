"""`caeav import` and `caeav export-official`: checkpoints of the authors' research code in and out.

Thin layer over `caeav.interop.convert`; errors are one line (the CLI edge in `caeav.cli.main`).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def import_official(
    src: Path = typer.Argument(..., help="checkpoint saved by the authors' code (torch.save of a state dict)"),
    task: str = typer.Option(..., "--task", "-t", help="ave, avvp, avqa, avs_s4 (avs), avs_ms3"),
    out: Path = typer.Option(..., "--out", "-o", help="caeav checkpoint directory to write"),
    variant: str = typer.Option("cae_av", "--variant", help="cae_av (CAE-AV's model files) or avmoe (AVMoE's)"),
    config: str = typer.Option("paper", "--config", "-c", help="preset the authors' model matches (paper)"),
    overrides: Optional[List[str]] = typer.Argument(
        None, help="config overrides key=value, e.g. visual.weights=FILE audio.weights=FILE st.weights=FILE"),
) -> None:
    """Import a CAE-AV or AVMoE checkpoint trained with the authors' code as a caeav checkpoint."""
    from caeav.interop.convert import import_official as run
    from caeav.outputs import check_output_dir

    check_output_dir(out, "--out")
    report = run(src, task, out, variant=variant.replace("-", "_"), preset=config, overrides=list(overrides or []))
    for line in report.lines():
        typer.echo(line)


def export_official(
    checkpoint: Path = typer.Argument(..., help="caeav checkpoint directory"),
    out: Path = typer.Option(..., "--out", "-o", help="file to write (a state dict the authors' code loads)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="e.g. visual.weights=FILE if the file moved"),
) -> None:
    """Write a caeav checkpoint in the authors' state-dict format (the inverse of `caeav import`)."""
    from caeav.interop.convert import export_official as run
    from caeav.outputs import check_output_file

    check_output_file(out, "--out")
    info = run(checkpoint, out, overrides=list(overrides or []))
    prefix = f", keys prefixed {info['prefix']!r}" if info["prefix"] else ""
    typer.echo(f"wrote {out}: {info['entries']} entries of the authors' {info['task']} "
               f"{info['variant'].replace('_', '-')} model{prefix}; {info['zero_filled_unused']} unused entries "
               "written as zeros")
