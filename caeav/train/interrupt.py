"""Stopping `caeav train` cleanly on Ctrl-C (SIGINT) or SIGTERM.

    with StopRequest(announce=True) as stop:
        for step in ...:
            ...optimiser step...
            if stop.requested:          # under DDP: D.any_true(stop.requested, dist), so every rank stops together
                save last/
                stop.deliver()          # raises KeyboardInterrupt (SIGINT) or caeav.errors.Terminated (SIGTERM)

The first signal is held: the training loop finishes the optimiser step it is in, rewrites `last/` at that step
boundary (the state a `checkpoint_every` save would hold, so the resumed run is the uninterrupted one) and then
raises what the signal would have raised, so the CLI exits 130 / 143. A signal arriving during validation stops the
run after that epoch's `last/` is written. A second signal (more than `DEBOUNCE_S` after the first: torchrun passes
on the terminal's Ctrl-C, which every rank also got) is delivered at once; `last/` then keeps its previous, complete
content (checkpoints are written atomically, `caeav.files.staged_dir`).

Data-loader workers ignore both signals (`ignore_stop_signals`, their `worker_init_fn`): the main process decides
when to stop and shuts them down, instead of a worker dying mid-batch and the loader raising "worker exited
unexpectedly".
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Optional

from caeav.errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEBOUNCE_S = 1.0  # a second signal sooner than this is the same stop request delivered twice


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """`worker_init_fn` of the training loaders: SIGINT / SIGTERM are the main process's to handle."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class StopRequest:
    """Holds the first SIGINT / SIGTERM of the block for the caller to act on at a safe point (module docstring).
    Outside the main thread it holds nothing (Python runs signal handlers there only)."""

    def __init__(self, announce: bool = True):
        self.announce = announce
        self.signum: Optional[int] = None
        self._at = 0.0
        self._previous: dict = {}  # the handlers in place before the block, by signal
        self._installed = False

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                handler = signal.getsignal(signum)
                if handler not in (signal.SIG_IGN, None):
                    self._previous[signum] = handler
                    signal.signal(signum, self._hold)
            self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _hold(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum, self._at = signum, time.monotonic()
            if self.announce:
                self._say(f"caeav: {signal.Signals(signum).name} received: stopping after this optimiser step, with "
                          "last/ saved (send it again to stop at once)")
        elif time.monotonic() - self._at > DEBOUNCE_S:
            self._restore()
            self._raise(signum)

    @staticmethod
    def _say(text: str) -> None:
        try:
            print(text, file=sys.stderr, flush=True)
        except RuntimeError:  # a reentrant write: the signal arrived while stderr was being written
            pass

    def deliver(self) -> None:
        """Raise the held signal's exception (KeyboardInterrupt when the request came from another rank)."""
        self._restore()
        self._raise(self.signum or signal.SIGINT)

    def _raise(self, signum: int) -> None:
        """What the handler in place before the block does (KeyboardInterrupt, or the CLI's Terminated for SIGTERM,
        which makes it exit 143); a default-action SIGTERM becomes Terminated too."""
        handler = self._previous.get(signum)
        if callable(handler):
            handler(signum, None)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def _restore(self) -> None:
        if self._installed:
            self._installed = False
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
