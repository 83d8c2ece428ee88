"""The rows a task puts under the filmstrip and spectrogram of `caeav infer --plot` (drawn by `caeav.runtime.plot`).

Every row spans the video's timeline (seconds on the x axis) except `Ranking` and `Text`, which are full-width blocks.
Colour keys are class indices (one stable colour per class, `plot.class_colour`); None is the light grey of
background / nothing, -1 the neutral colour of bars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Lane:
    """Coloured spans on the timeline: cells = [(start s, stop s, colour key or None, text)]. `legend`: the cells'
    texts are class names, listed with their colours under the figure."""

    title: str
    cells: list = field(default_factory=list)
    legend: bool = False


@dataclass
class Bars:
    """One bar per second, height = value in [0, 1] (a probability, a confidence, a mask area)."""

    title: str
    values: list = field(default_factory=list)
    colour: Optional[int] = None
    labels: bool = True  # print the value on bars wide enough


@dataclass
class Ranking:
    """Horizontal bars of (label, probability), best first; `mark` is the label to highlight."""

    title: str
    items: list = field(default_factory=list)
    mark: Optional[str] = None


@dataclass
class Text:
    lines: list = field(default_factory=list)
    bold: bool = False
