"""Captions of synthetic clips, as an MLLM would write them from what is seen and heard (`captions.jsonl`).

`caeav data synth` writes one visual and one audio caption per clip into `captions.jsonl` at the dataset root, in
the format `caeav captions import` reads, so the caption branch of CAE-AV can be trained and measured on synthetic
data (`caeav captions import captions.jsonl --cache C && caeav captions encode --cache C`). The captions describe
perception, not labels: the visual caption names each visible object's colour, shape and position with the seconds
it is on screen; the audio caption each audible source's kind (tone or noise), pitch and the seconds it sounds. So
an off-screen sound appears only in the audio caption and a silent object only in the visual one, as with a real
MLLM; the class names never appear (the model has to learn what a "high tone" or a "blue ring" means).
"""

from __future__ import annotations

import json
from pathlib import Path

from .synth_scene import SHAPES, Source, class_frequency, class_is_noise

MODEL = "caeav-synth"  # the `model` recorded with the captions
HUES = ((0, "red"), (30, "orange"), (60, "yellow"), (120, "green"), (180, "cyan"), (240, "blue"), (280, "purple"),
        (320, "pink"), (360, "red"))


def colour_name(cls: int) -> str:
    hue = ((cls * 0.6180339887) % 1.0) * 360
    return min(HUES, key=lambda h: abs(h[0] - hue))[1]


def pitch_name(cls: int) -> str:
    f = class_frequency(cls)
    return "low" if f < 400 else "middle" if f < 800 else "high"


def _when(intervals, seconds: int) -> str:
    spans = [(max(0, int(on)), min(seconds, int(off))) for on, off in intervals if off > on]
    if spans == [(0, seconds)]:
        return "throughout"
    return " and ".join(f"from {on} s to {off} s" for on, off in spans)


def _where(src: Source) -> str:
    x = src.anchor[0]
    return "on the left" if x < 0.4 else "on the right" if x > 0.6 else "in the centre"


def visual_caption(sources: list, seconds: int) -> str:
    seen = [s for s in sources if s.visible]
    if not seen:
        return "An empty grey frame; nothing moves."
    parts = [f"a {colour_name(s.cls)} {SHAPES[s.cls % len(SHAPES)]} moves {_where(s)} {_when(s.visible, seconds)}"
             for s in seen]
    return "; ".join(parts).capitalize() + "."


def audio_caption(sources: list, seconds: int) -> str:
    heard = [s for s in sources if s.audible]
    if not heard:
        return "Silence."
    parts = [f"a {pitch_name(s.cls)} {'hiss of noise' if class_is_noise(s.cls) else 'tone'} sounds "
             f"{_when(s.audible, seconds)}" for s in heard]
    return "; ".join(parts).capitalize() + "."


def append_captions(root: Path, clip_id: str, sources: list, seconds: int) -> None:
    """Append the clip's visual and audio caption lines to `root/captions.jsonl`."""
    lines = [{"clip_id": clip_id, "modality": m, "text": text, "model": MODEL, "prompt_version": "synthetic"}
             for m, text in (("visual", visual_caption(sources, seconds)), ("audio", audio_caption(sources, seconds)))]
    with open(Path(root) / "captions.jsonl", "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(line) + "\n" for line in lines))

