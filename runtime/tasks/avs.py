"""AVS (AVSBench S4 / MS3): a binary mask of the sounding objects on each sampled frame.

Sampling: the task's own, from the bundle (`sampling` = "centre", T = 5): one frame per 1-s segment, the frame
displayed at its centre (t + 0.5 s), which is what AVSBench's five 1-frame-per-second frames of a 5-s clip are and
what `caeav.data` decodes for training. A longer video is covered by 5-s windows (`caeav.runtime.windows`: starts 0,
5, 10, ... or every `--window-stride` seconds, the last one moved back to end exactly at N), so it gets one mask per
second of its timeline; where windows overlap, a second's mask logits are averaged before the threshold (a second in
one window keeps that window's logits exactly). A clip shorter than 5 s is padded (last frame repeated, silence)
and only its N frames are reported.

Threshold, exactly as `caeav eval` scores masks (mIoU): pixel = logit > 0, i.e. σ(logit) > 0.5
(`caeav.model.heads.postprocess_avs.avs_predict`), at the model's mask size M x M. That mask is then resized to the
video's own upright resolution with nearest neighbour; `area` (fraction of pixels) and `bbox` ([x0, y0, x1, y1],
inclusive pixels; null when empty) are measured on the resized mask, which is what `--masks` writes
(`<stem>_t<time>.png`, e.g. clip_t003.50.png, one binary PNG per frame) and `--overlay` tints over the clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..rows import Bars
from ..windows import covering_window, merge_per_second
from .ave import video_title
from .avs_files import overlay_path, resize_mask, tint, write_masks, write_overlay
from .base import TaskAdapter


class AVSAdapter(TaskAdapter):
    tasks = ("avs_s4", "avs_ms3")
    family = "AVS"
    options = ("masks", "overlay")
    output_sets = (("masks",),)
    agreement = "mask pixels"

    def finish(self, bundle, video, outputs):
        from caeav.model.heads.postprocess_avs import avs_predict

        T = bundle.segments
        logits = [np.asarray(w[0]["masks"], dtype=np.float32).reshape((T,) + w[0]["masks"].shape[-2:])
                  for w in outputs]
        merged = merge_per_second(logits, video.starts, video.seconds)  # [N, M, M]
        binary = avs_predict(merged[:, None], 1)[:, 0]  # the eval rule: logit > 0
        times = second_times(video)
        frames = [frame_entry(t, resize_mask(m, video.size)) for t, m in zip(times, binary)]
        return {"resolution": list(video.size), "frames": frames, "overlay": None,
                "arrays": {"masks": binary, "times": times}}

    def write_files(self, result, options, bundle, single: bool = True) -> list[str]:
        notes, tl = [], result.timeline
        times, masks = tl["arrays"]["times"], tl["arrays"]["masks"]
        if options.masks:
            names = mask_names(Path(result.path).stem, times)
            items = [(name, resize_mask(m, tl["resolution"])) for name, m in zip(names, masks)]
            write_masks(options.masks, items)
            for frame, (name, _) in zip(tl["frames"], items):
                frame["mask"] = name
            notes.append(f"{len(items)} mask(s) written to {options.masks}")
        if options.overlay:
            out = write_overlay(result.path, overlay_path(options.overlay, result.path, single), times, masks,
                                tl["resolution"])
            tl["overlay"] = str(out)
            notes.append(f"overlay written to {out}")
        return notes

    def table(self, result):
        from rich.table import Table

        table = Table(title=video_title(result) + f", {result.timeline['resolution'][0]}x"
                      f"{result.timeline['resolution'][1]}", title_justify="left")
        for col, just in (("time", "right"), ("area", "right"), ("bbox", "left"), ("mask", "left")):
            table.add_column(col, justify=just)
        for f in result.timeline["frames"]:
            box = "-" if f["bbox"] is None else "[" + ", ".join(str(v) for v in f["bbox"]) + "]"
            table.add_row(f"{f['time']:.2f} s", f"{100 * f['area']:.1f} %", box, f["mask"] or "-")
        return table

    def figure_rows(self, result, bundle):
        return [Bars("mask area", [f["area"] for f in result.timeline["frames"]], colour=-1)]

    def tint(self, result, time: float, rgb: np.ndarray) -> np.ndarray:
        times = result.timeline["arrays"]["times"]
        k = int(np.argmin(np.abs(np.asarray(times) - time)))
        return tint(rgb, resize_mask(result.timeline["arrays"]["masks"][k], (rgb.shape[1], rgb.shape[0])))

    def bench_labels(self, bundle, outputs):
        from caeav.model.heads.postprocess_avs import avs_predict

        return avs_predict(outputs["masks"], bundle.segments)


def second_times(video) -> list[float]:
    """The timestamp of the frame sampled for each second t of the timeline (from the first window covering t)."""
    T = len(video.frame_times[0])
    times = []
    for t in range(video.seconds):
        w = covering_window(video.starts, T, t)
        times.append(round(float(video.frame_times[w][t - video.starts[w]]), 3))
    return times


def frame_entry(time: float, mask: np.ndarray) -> dict:
    """{time, mask (file name, set by --masks), area, bbox} of one frame from its full-resolution bool mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    bbox = None if rows.size == 0 else [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]
    return {"time": time, "mask": None, "area": round(float(mask.mean()), 6), "bbox": bbox}


def mask_names(stem: str, times) -> list[str]:
    """`<stem>_t003.50.png` per frame time; a frame shown for several seconds (a clip under 1 frame/s) gets the
    second appended (`<stem>_t000.00_s1.png`) so no file overwrites another."""
    names, seen = [], set()
    for second, time in enumerate(times):
        name = f"{stem}_t{time:06.2f}.png"
        names.append(name if name not in seen else f"{stem}_t{time:06.2f}_s{second}.png")
        seen.add(names[-1])
    return names


ADAPTER = AVSAdapter()
