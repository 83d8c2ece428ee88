"""The terminal view of `caeav infer` results: each video's table comes from its task adapter (`table`), the notes,
failures and timings around it are the same for every task (formatting only)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_report(report, console: Console | None = None) -> None:
    console = console or Console()
    adapter = report.bundle.adapter
    for result in report.results:
        rendered = adapter.table(result)
        for item in rendered if isinstance(rendered, list) else [rendered]:
            console.print(item)
        if result.captions["source"] == "none":
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
