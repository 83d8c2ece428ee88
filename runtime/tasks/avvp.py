"""AVVP (audio-visual video parsing): per-second audio, visual and audio-visual events of 25 classes
(`caeav.runtime.events.avvp_timeline`)."""

from __future__ import annotations

import numpy as np

from ..events import avvp_timeline
from ..rows import Lane
from .ave import span, video_title
from .base import TaskAdapter

MODALITIES = (("audio", "audio"), ("visual", "visual"), ("audio_visual", "audio-visual"))


class AVVPAdapter(TaskAdapter):
    tasks = ("avvp",)
    family = "AVVP"
    output_sets = (("global_prob", "a_frame_prob", "v_frame_prob"),)
    agreement = "per-second audio / visual / audio-visual labels"

    def finish(self, bundle, video, outputs):
        windows = [w[0] for w in outputs]
        count = windows[0]["global_prob"].shape[-1]
        threshold = float(bundle.postprocess.get("threshold", 0.5))
        return avvp_timeline(windows, video.starts, video.seconds, bundle.segments, bundle.class_names(count),
                             threshold)

    def table(self, result):
        from rich.table import Table

        table = Table(title=video_title(result), title_justify="left")
        for col, just in (("time", "right"), ("modality", "left"), ("event", "left"), ("confidence", "right")):
            table.add_column(col, justify=just)
        grouped: dict = {}  # events sharing a span and a modality share a row
        for modality, evs in result.timeline["events"].items():
            for e in evs:
                grouped.setdefault((e["onset"], e["offset"], modality), []).append(e)
        rows = sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2]))
        for (onset, offset, modality), evs in rows:
            conf = [e["confidence"] for e in evs]
            table.add_row(span(onset, offset), modality.replace("_", "-"), ", ".join(e["label"] for e in evs),
                          ", ".join(f"{c:.2f}" for c in conf) if len(evs) < 4 else f"{min(conf):.2f}-{max(conf):.2f}")
        if not rows:
            table.add_row("-", "-", "[dim]no event detected[/dim]", "-")
        return table

    def figure_rows(self, result, bundle):
        """One lane per (modality, class present): each second's cell shows that modality's probability."""
        tl = result.timeline
        rows = []
        for modality, title in MODALITIES:
            probs = tl["arrays"].get(f"prob_{modality}")
            by_class: dict = {}
            for e in tl["events"][modality]:
                by_class.setdefault((e["index"], e["label"]), []).append(e)
            if not by_class:
                rows.append(Lane(f"{title}: -", []))
            for (index, label), evs in sorted(by_class.items()):
                cells = []
                for e in evs:
                    for t in range(e["onset"], e["offset"]):
                        text = f"{probs[t, index]:.2f}" if probs is not None else ""
                        cells.append((t, t + 1, index, text))
                rows.append(Lane(f"{title}: {label}", cells))
        return rows

    def bench_labels(self, bundle, outputs):
        from caeav.model.heads.postprocess_avvp import avvp_predict_outputs

        return np.stack([v for k, v in sorted(avvp_predict_outputs(outputs).items()) if k != "video"])


ADAPTER = AVVPAdapter()
