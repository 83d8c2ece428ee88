"""`caeav model ...`: inspect the model without weights or data."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

app = typer.Typer(help="Inspect the CAE-AV model (built on the meta device: no weights, no memory).", no_args_is_help=True)


@app.command()
def summary(
    config: str = typer.Option("tiny", "--config", "-c", help="preset: tiny, base or paper"),
    task: str = typer.Option("ave", "--task", "-t", help="ave, avvp, avqa, avs_s4 (avs), avs_ms3"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    flops: bool = typer.Option(False, "--flops", help="also FLOPs per clip (batch 1) per component, counted on the "
                               "meta device, and their reconciliation with the authors' model"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value config overrides"),
) -> None:
    """Parameter counts per component (trainable and frozen) and input/output shapes; `--flops` adds FLOPs per clip."""
    from caeav.config import load_config
    from caeav.model.summary import summarize

    cfg = load_config(config, task, overrides or [])
    report = summarize(cfg)
    if flops:
        from caeav.model.flops import flops_report

        report["flops"] = flops_report(cfg)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from caeav.cli.render import print_summary

    print_summary(report)
    if flops:
        from caeav.cli.render import print_flops

        print_flops(report["flops"])
