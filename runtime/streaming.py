"""Decode-ahead for `Pipeline.run`: the windows of every video, streamed in the run's order with bounded memory.

    with WindowFeed(pipeline, paths) as feed:
        for kind, index, path, item in feed:   # "video" Decoded, "window" (start, ClipMedia), "end", "error" exc
            ...
            feed.release(n)                    # n windows went through the engine: their arrays are gone

Each video is decoded on the thread pool (PyAV releases the GIL) by one producer that opens it
(`decode_video(stream=True)`: probe, captions, queries), then hands its windows (`WindowStream`) one at a time to a
queue of `read_ahead` windows (the pipeline's batch, at least 2), so a producer waits while the engine is behind.
`ahead` videos (2 per decoding thread) are open at once and at most `workers` produce at a time; the main thread
takes them strictly in order, so the windows reach the engine in the same order, and in the same batches, as when
every video was decoded whole first. What one video can hold decoded at a time: `read_ahead` windows in its queue,
one in its producer's hands and ceil(T / stride) in `WindowStream` (truncation), whatever its length; `peak` counts
the windows handed out and not yet released. On exit (the run ended or was interrupted) the producers stop at their
next window and what has not started is cancelled.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from queue import Full, Queue

from .decoding import decode_video


class WindowFeed:
    """The stream of one run's videos and windows (module docstring)."""

    def __init__(self, pipeline, paths: list):
        self.pipeline, self.paths = pipeline, list(enumerate(paths))
        self.workers = max(1, int(pipeline.options.workers))
        self.ahead = max(2, 2 * self.workers)
        self.read_ahead = max(2, int(pipeline.batch))
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.held = self.peak = 0

    def __enter__(self) -> "WindowFeed":
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="caeav-decode")
        return self

    def __exit__(self, *exc) -> bool:
        self.stop.set()  # a producer waiting on a full queue gives up at its next try
        self.pool.shutdown(wait=True, cancel_futures=True)
        return False

    def last(self, index: int) -> bool:
        """Whether video `index` is the run's last one (the engine then runs what is queued, however little)."""
        return index == len(self.paths) - 1

    def release(self, count: int) -> None:
        """`count` windows went through the engine (or were dropped with their video)."""
        self._count(-count)

    def _count(self, delta: int) -> None:
        with self._lock:
            self.held += delta
            self.peak = max(self.peak, self.held)

    def __iter__(self):
        todo, pending = deque(self.paths), deque()
        while todo or pending:
            while todo and len(pending) < self.ahead:
                index, path = todo.popleft()
                box: Queue = Queue(self.read_ahead)
                pending.append((index, path, box, self.pool.submit(self._produce, index, path, box)))
            index, path, box, _ = pending.popleft()
            while True:
                kind, item = box.get()
                yield kind, index, path, item
                if kind in ("end", "error"):
                    break

    def _put(self, box: Queue, item: tuple) -> bool:
        while not self.stop.is_set():
            try:
                box.put(item, timeout=0.2)
                return True
            except Full:
                continue
        return False

    def _produce(self, index: int, path: str, box: Queue) -> None:
        """One video on a decoding thread: "video", its windows, then "end" (or "error" with the exception)."""
        p = self.pipeline
        try:
            video = decode_video(p.bundle, p.adapter, p.options, p.captions, index, path, stream=True)
            if not self._put(box, ("video", video)):
                return
            for start, clip in video.windows:
                self._count(1)
                if not self._put(box, ("window", (start, clip))):
                    return
            self._put(box, ("end", None))
        except Exception as exc:  # handed to the main thread, which records the video as a Failure
            self._put(box, ("error", exc))
