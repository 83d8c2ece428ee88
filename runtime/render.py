"""The terminal view of `caeav infer` results: each video's table comes from its task adapter (`table`), the notes,
failures and timings around it are the same for every task (formatting only)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def caption_line(captions: dict) -> str:
    """One line when a video ran on the empty-caption features in some modality: which, the cost, the fix."""
    sources = captions.get("sources") or {}
    empty = [m for m in ("visual", "audio") if sources.get(m, captions.get("source")) == "none"]
    if not empty:
        return ""
    which = "no captions" if len(empty) == 2 else f"no {empty[0]} caption"
    return (f"  captions: {which} (empty-caption features; accuracy without captions: see README 'Captions at "
            "inference'); fix: --caption-endpoint URL or `caeav captions generate`")


def print_report(report, console: Console | None = None) -> None:
    console = console or Console()
    adapter = report.bundle.adapter
    for result in report.results:
        rendered = adapter.table(result)
        for item in rendered if isinstance(rendered, list) else [rendered]:
            console.print(item)
        line = caption_line(result.captions)
        if line:
            console.print(line, style="yellow", highlight=False, soft_wrap=True)  # one line, even if long
        for note in result.warnings:
            console.print(f"  note: {note}", style="yellow")
    for note in report.notes:
        console.print(f"note: {note}", style="yellow")
    if report.failures and (report.results or len(report.failures) > 1):
        failed = Table(title=f"{len(report.failures)} file(s) failed", title_justify="left", title_style="bold red")
        failed.add_column("file")
        failed.add_column("error")
        for f in report.failures:
            failed.add_row(f.path, f.error)
        console.print(failed)
    n = len(report.results)
    if n:
        t = report.timings
        console.print(f"{n} video(s) processed with {report.engine} {report.precision} in "
                      f"{t.get('total_s', 0):.2f} s (inference {t.get('inference_s', 0):.2f} s)", style="dim")
