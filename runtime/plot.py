"""Timeline PNG of `caeav infer` results, drawn with Pillow (no matplotlib).

One panel per video, one column per second. AVE: a row of audio-visual event labels (background light grey) and a
row of per-second confidence bars. AVVP: an audio, a visual and an audio-visual group, each with one lane per class
present in it. Each class keeps one colour across rows; a legend lists the classes shown.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Sequence, Union

from PIL import Image, ImageDraw, ImageFont

LANE, GAP, LEFT, RIGHT, TOP = 18, 6, 170, 20, 8
BACKGROUND_RGB = (225, 225, 225)


def class_colour(index: int) -> tuple[int, int, int]:
    """A stable, well separated colour per class index (golden-ratio hue steps)."""
    h = (index * 0.61803398875) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def _lanes(result, task: str) -> list[tuple[str, list]]:
    """[(lane title, [(second_start, second_stop, class index or None, fill fraction), ...])]."""
    tl = result.timeline
    if task == "ave":
        arrays = tl["arrays"]
        events = [(e["onset"], e["offset"], None if e["background"] else e["index"], 1.0) for e in tl["events"]]
        conf = [(t, t + 1, -1, float(c)) for t, c in enumerate(arrays["confidence"])]
        return [("audio-visual event", events), ("confidence", conf)]
    lanes = []
    for modality, title in (("audio", "audio"), ("visual", "visual"), ("audio_visual", "audio-visual")):
        by_class: dict = {}
        for e in tl["events"][modality]:
            by_class.setdefault((e["index"], e["label"]), []).append((e["onset"], e["offset"], e["index"], 1.0))
        if not by_class:
            lanes.append((f"{title}: -", []))
        for (_, label), cells in sorted(by_class.items()):
            lanes.append((f"{title}: {label}", cells))
    return lanes


def draw_timeline(results: Sequence, task: str, path: Union[str, os.PathLike], max_width: int = 1400) -> Path:
    """Write the PNG for `results` (VideoResult objects) to `path` and return it."""
    font = ImageFont.load_default()
    seconds = max([r.seconds for r in results] + [1])
    cell = max(4, min(40, (max_width - LEFT - RIGHT) // seconds))
    width = LEFT + RIGHT + cell * seconds
    panels = [(r, _lanes(r, task)) for r in results]
    classes = sorted({(c, name) for r, lanes in panels for _, cells in lanes for (_, _, c, _) in cells
                      if c is not None and c >= 0 for name in [_name(r, task, c)]})
    height = TOP + sum(2 * LANE + len(lanes) * (LANE + 2) + GAP * 2 for _, lanes in panels)
    height += LANE * (1 + (len(classes) + 3) // 4)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    y = TOP
    for result, lanes in panels:
        draw.text((4, y), f"{Path(result.path).name}  ({result.duration:.1f} s, {task})", fill="black", font=font)
        y += LANE
        for title, cells in lanes:
            draw.text((4, y + 3), title[:28], fill="black", font=font)
            draw.rectangle([LEFT, y, LEFT + cell * result.seconds - 1, y + LANE - 1], fill=(245, 245, 245))
            for start, stop, c, frac in cells:
                x0, x1 = LEFT + start * cell, LEFT + stop * cell - 1
                if c == -1:  # a confidence bar
                    top = y + int((1.0 - frac) * (LANE - 2))
                    draw.rectangle([x0 + 1, top, x1 - 1, y + LANE - 1], fill=(90, 90, 160))
                else:
                    draw.rectangle([x0, y, x1, y + LANE - 1], fill=BACKGROUND_RGB if c is None else class_colour(c),
                                   outline="white")
            y += LANE + 2
        for t in range(0, result.seconds + 1, max(1, 60 // cell if cell < 12 else 1)):  # the seconds axis
            x = LEFT + t * cell
            draw.line([x, y, x, y + 4], fill="black")
            if t % max(1, (40 // cell) + 1) == 0:
                draw.text((x + 1, y + 4), str(t), fill="black", font=font)
        y += LANE + GAP * 2
    x = 4
    for i, (c, name) in enumerate(classes):
        if i % 4 == 0 and i:
            y += LANE
            x = 4
        draw.rectangle([x, y + 3, x + 10, y + 13], fill=class_colour(c))
        draw.text((x + 14, y + 3), name[:30], fill="black", font=font)
        x += max(200, (width - 8) // 4)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


def _name(result, task: str, index: int) -> str:
    tl = result.timeline
    events = tl["events"] if task == "ave" else [e for m in tl["events"].values() for e in m]
    return next((e["label"] for e in events if e["index"] == index), f"class {index}")
