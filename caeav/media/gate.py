"""Skipping work the picked frames do not need, without changing which frames are picked.

Most of a clip's decode time goes into frames that are never shown to the model. Frames that no other frame
references (B-frames, for H.264 usually about half of them) can be dropped by the decoder (``skip_frame = NONREF``)
at no cost to the frames that are decoded. `NonRefGate` lets the decoder drop them unless the packet's timestamp lies
just before one of the instants (where it may be the frame displayed at that instant), and records what it let go.
`exact` then proves, from those timestamps, that no dropped frame would have been picked; when it cannot (odd
timestamps, variable frame rate with long gaps), the caller decodes the window again without skipping.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .sampling import TIME_EPS


class NonRefGate:
    def __init__(self, codec_context, instants: list[float], lead: float):
        self.ctx = codec_context
        self.instants = instants
        self.lead = lead  # seconds before an instant in which every frame is decoded
        self.skipping = False
        self.let_go: list[float] = []  # times of packets submitted while non-reference frames were being dropped

    def before_packet(self, t) -> None:
        """Call with the packet's time (seconds from the window start, None if unknown) before decoding it."""
        if t is None:
            skip = False
        else:
            i = bisect_left(self.instants, t - TIME_EPS)
            skip = i >= len(self.instants) or self.instants[i] - t > self.lead
        if skip != self.skipping:
            self.ctx.skip_frame = "NONREF" if skip else "DEFAULT"
            self.skipping = skip
        if skip:
            self.let_go.append(t)

    def exact(self, picked: list, instants=None) -> bool:
        """True when no dropped frame could be the frame displayed at any instant (see the module docstring).
        `instants`: those `picked` was picked for, when the gate serves several pickers (default: the gate's own)."""
        gone = sorted(self.let_go)
        if not gone:
            return True
        for instant, (t, _) in zip(self.instants if instants is None else instants, picked):
            hi = bisect_right(gone, instant + TIME_EPS)  # dropped frames at or before the instant: gone[:hi]
            if hi and (gone[hi - 1] > t or t > instant + TIME_EPS):
                return False
        return True
