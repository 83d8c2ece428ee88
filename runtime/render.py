"""Rich tables of `caeav infer` results (formatting only)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def _span(onset: int, offset: int) -> str:
    return f"{onset}-{offset} s"


def video_table(result, task: str) -> Table:
    tl = result.timeline
    title = f"{Path(result.path).name}: {result.duration:.1f} s, {len(result.windows)} window(s)"
    table = Table(title=title, title_justify="left")
    if task == "ave":
        for col, just in (("time", "right"), ("label", "left"), ("confidence", "right")):
            table.add_column(col, justify=just)
        for e in tl["events"]:
            label = f"[dim]{e['label']}[/dim]" if e["background"] else f"[b]{e['label']}[/b]"
            table.add_row(_span(e["onset"], e["offset"]), label, f"{e['confidence']:.2f}")
        return table
    for col, just in (("time", "right"), ("modality", "left"), ("event", "left"), ("confidence", "right")):
        table.add_column(col, justify=just)
    grouped: dict = {}  # events sharing a span and a modality share a row
    for modality, evs in tl["events"].items():
        for e in evs:
            grouped.setdefault((e["onset"], e["offset"], modality), []).append(e)
    rows = sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2]))
    for (onset, offset, modality), evs in rows:
        table.add_row(_span(onset, offset), modality.replace("_", "-"), ", ".join(e["label"] for e in evs),
                      ", ".join(f"{e['confidence']:.2f}" for e in evs) if len(evs) < 4 else
                      f"{min(e['confidence'] for e in evs):.2f}-{max(e['confidence'] for e in evs):.2f}")
    if not rows:
        table.add_row("-", "-", "[dim]no event detected[/dim]", "-")
    return table


def print_report(report, console: Console | None = None) -> None:
    console = console or Console()
    task = report.bundle.task
    for result in report.results:
        console.print(video_table(result, task))
        captions = result.captions
        if captions["source"] == "none":
            console.print("  captions: none (empty-caption features)", style="dim")
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
