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
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value config overrides"),
) -> None:
    """Parameter counts per component (trainable and frozen) and input/output shapes."""
    from caeav.config import load_config
    from caeav.model.summary import summarize

    cfg = load_config(config, task, overrides or [])
    report = summarize(cfg)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from caeav.cli.render import print_summary

    print_summary(report)
