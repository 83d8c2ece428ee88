"""The circuit breaker of a caption run: stop after N connection failures in a row, and the run's stop signal.

Every worker thread's `ChatClient.call` reports to one `Breaker`: a connection failure (refused, reset, DNS, timeout)
counts; any HTTP answer from the server (even an error status or a garbage body) proves the server is reachable and
resets the count. When `limit` failures come in a row the breaker trips: `stop` is set, backoff waits wake up at once
and no further request starts. `stop` is also what Ctrl-C and the request-failure limit of a run set.
"""

from __future__ import annotations

import threading

from caeav.errors import CaptionError


class Cancelled(CaptionError):
    """A request given up because the run is stopping (not a failure of its clip)."""


class Breaker:
    """Counts consecutive connection failures across threads; `limit` 0 never trips (`stop` still works)."""

    def __init__(self, limit: int = 5):
        self.limit = max(0, int(limit))
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.in_a_row = 0
        self.last = ""  # the latest connection failure
        self.tripped = False
        self.tripped_after = 0  # failures in a row when it tripped

    def connection_failed(self, reason: str) -> None:
        with self._lock:
            self.in_a_row += 1
            self.last = reason
            if self.limit and self.in_a_row >= self.limit and not self.tripped:
                self.tripped, self.tripped_after = True, self.in_a_row
                self.stop.set()

    def reached(self) -> None:
        """The server answered (whatever it answered)."""
        with self._lock:
            self.in_a_row = 0

    def check(self) -> None:
        """Cancelled when the run is stopping."""
        if self.stop.is_set():
            raise Cancelled("the run is stopping")

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, or less if the run stops meanwhile (then Cancelled)."""
        self.stop.wait(max(0.0, seconds))
        self.check()
