"""Terminal rendering for CLI reports (rich tables). Only formatting lives here."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt(n: int) -> str:
    return f"{n:,}"


def print_summary(report: dict) -> None:
    console = Console()
    title = f"CAE-AV {report['config']} / {report['task']}"
    table = Table(title=title)
    table.add_column("component")
    table.add_column("trainable", justify="right")
    table.add_column("frozen", justify="right")
    table.add_column("total", justify="right")
    for name, row in report["components"].items():
        table.add_row(name, _fmt(row["trainable"]), _fmt(row["frozen"]), _fmt(row["total"]))
    tot = report["totals"]
    table.add_row("[b]total[/b]", _fmt(tot["trainable"]), _fmt(tot["frozen"]), _fmt(tot["total"]))
    console.print(table)
    console.print(f"trainable share: {100 * tot['trainable_share']:.2f} %")
    for key, title in (("table_ii_reconciliation", "reconciliation with the paper's Table II"),
                       ("authors_reconciliation", "reconciliation with the authors' state dict")):
        rec = report.get(key)
        if not rec:
            continue
        recon = Table(title=title)
        recon.add_column("line")
        recon.add_column("value", justify="right")
        for line, value in rec.items():
            if isinstance(value, dict):
                value = f"{value['total'] / 1e6:.1f} M, {100 * value['trainable_share']:.1f} % trainable"
            elif isinstance(value, float):
                value = f"{100 * value:.2f} %"
            else:
                value = _fmt(value)
            recon.add_row(line, value)
        console.print(recon)
    shapes = Table(title="inputs and outputs")
    shapes.add_column("name")
    shapes.add_column("shape")
    shapes.add_column("dtype")
    for kind in ("inputs", "outputs"):
        for name, spec in report[kind].items():
            shapes.add_row(f"{kind[:-1]} {name}", "×".join(str(d) for d in spec["shape"]), spec["dtype"])
    console.print(shapes)
    for line in report.get("notes", []):
        console.print(f"- {line}")


def _gflop(n: int) -> str:
    return f"{n / 1e9:,.2f}"


def print_flops(flops: dict) -> None:
    """The `flops` section of `caeav model summary --flops`: per-component GFLOP per clip, then the reconciliation."""
    console = Console()
    table = Table(title=f"FLOPs per {flops['per']}")
    table.add_column("component")
    table.add_column("GFLOP", justify="right")
    table.add_column("share", justify="right")
    total = flops["total"]
    for name, value in flops["components"].items():
        table.add_row(name, _gflop(value), f"{100 * value / total:.1f} %")
        for detail, part in flops["of_which"].items():
            if detail.rsplit(": ", 1)[0] == name:
                table.add_row(f"  of which {detail.rsplit(': ', 1)[1]}", _gflop(part), f"{100 * part / total:.1f} %")
    table.add_row("[b]total[/b]", _gflop(total), "100.0 %")
    console.print(table)
    console.print(f"convention: {flops['convention']}")
    if flops["uncounted_heavy_ops"]:
        ops = ", ".join(f"{op} ×{n}" for op, n in flops["uncounted_heavy_ops"].items())
        console.print(f"[b]not counted (no formula):[/b] {ops}")
    recon = Table(title="reconciliation with the authors' FLOPs (issue 17)")
    recon.add_column("line")
    recon.add_column("GFLOP", justify="right")
    for line, value in flops["authors_flops_reconciliation"].items():
        recon.add_row(line, f"{100 * value:+.3f} %" if isinstance(value, float) else _gflop(value))
    console.print(recon)
    parts = flops.get("authors_components")
    if parts:
        side = Table(title="per component, GFLOP per clip")
        for column in ("component", "caeav", "authors", "issue 17"):
            side.add_column(column, justify="left" if column == "component" else "right")
        for name, row in parts.items():
            side.add_row(name, _gflop(row["caeav"]), _gflop(row["authors"]), f"{row['issue 17 (G)']:,}")
        console.print(side)


def robustness_table(result: dict, with_captions: bool) -> None:
    """`caeav eval --perturb`: the task's score clean and under each perturbation, with the change from clean."""
    console = Console()
    key = result["score"]
    table = Table(title=f"{result['task']} ({result['variant']}) {result['split']}, {result['clips']} items, "
                        f"seed {result['seed']}: {key}")
    table.add_column("inputs")
    table.add_column(key, justify="right")
    table.add_column("Δ vs clean", justify="right")
    table.add_row("clean", f"{result['clean']['score']:.2f}", "")
    for label, row in result["perturbed"].items():
        table.add_row(label, f"{row['score']:.2f}", f"{row['delta']:+.2f}")
    console.print(table)
    console.print("targets are the clean clips' in every row (how much the model is misled); offsets are circular",
                  style="dim")
    if not with_captions and "drop-captions" in result["perturbed"]:
        console.print("no --captions: every row already uses the empty-caption features, so drop-captions equals "
                      "clean", style="dim")
