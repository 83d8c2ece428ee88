"""AVE (audio-visual event localisation): one label per second, 28 events + background (`caeav.runtime.events`)."""

from __future__ import annotations

from pathlib import Path

from ..events import ave_timeline
from ..rows import Bars, Lane
from .base import TaskAdapter


class AVEAdapter(TaskAdapter):
    tasks = ("ave",)
    family = "AVE"
    output_sets = (("is_event", "event"), ("segment_logits",))  # CMBS head, MLP head
    agreement = "per-second labels"

    def finish(self, bundle, video, outputs):
        windows = [w[0] for w in outputs]
        first = windows[0]
        count = first["event"].shape[-1] if "event" in first else first["segment_logits"].shape[-1] - 1
        return ave_timeline(windows, video.starts, video.seconds, bundle.segments, bundle.class_names(count))

    def table(self, result):
        from rich.table import Table

        table = Table(title=video_title(result), title_justify="left")
        for col, just in (("time", "right"), ("label", "left"), ("confidence", "right")):
            table.add_column(col, justify=just)
        for e in result.timeline["events"]:
            label = f"[dim]{e['label']}[/dim]" if e["background"] else f"[b]{e['label']}[/b]"
            table.add_row(span(e["onset"], e["offset"]), label, f"{e['confidence']:.2f}")
        return table

    def figure_rows(self, result, bundle):
        tl = result.timeline
        events = [(e["onset"], e["offset"], None if e["background"] else e["index"], e["label"]) for e in tl["events"]]
        return [Lane("audio-visual event", events, legend=True),
                Bars("confidence", [float(c) for c in tl["arrays"]["confidence"]], colour=-1)]

    def bench_labels(self, bundle, outputs):
        from caeav.model.heads.postprocess import ave_predict

        return ave_predict(outputs)


def span(onset: int, offset: int) -> str:
    return f"{onset}-{offset} s"


def video_title(result) -> str:
    return f"{Path(result.path).name}: {result.duration:.1f} s, {len(result.windows)} window(s)"


ADAPTER = AVEAdapter()
