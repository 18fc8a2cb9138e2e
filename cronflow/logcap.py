"""The per-attempt log cap: head and tail of a job's output, and the last 4 KiB for hooks.

Pure (no I/O of its own): lines go in with their stream and time, and come out to a sink.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime

#: Size of the tail hooks get as CRONFLOW_LOG_TAIL.
TAIL_BYTES = 4 * 1024

OutputSink = Callable[[str, datetime, bytes], None]
"""Receives ``(stream, at, data)``: stream is "out", "err" or "marker"; data is one line."""


class OutputLog:
    """Delivers output lines to the sink, within the log cap, and keeps the last 4 KiB.

    With a cap, the first half of it is delivered live (cut at a line boundary where one exists);
    after that only a rolling tail of the last half-cap bytes is kept, and at the end a marker
    saying how many bytes were dropped is delivered, followed by the tail lines with their original
    stream and time. So head + tail never exceed the cap (the marker line aside). If the output
    ends up fitting in the cap, the tail is delivered without a marker.
    """

    def __init__(self, sink: OutputSink, cap: int | None) -> None:
        self._sink = sink
        cap = None if cap is None else max(0, cap)
        self._tail_budget = 0 if cap is None else cap // 2
        self._head_left = None if cap is None else cap - self._tail_budget
        self._head_delivered = 0
        self._capping = False
        self._tail: deque[tuple[str, datetime, bytes]] = deque()
        self._tail_size = 0
        self._dropped = 0
        self._last = bytearray()

    def add(self, stream: str, at: datetime, data: bytes) -> None:
        self._last += data
        if len(self._last) > TAIL_BYTES:
            del self._last[:-TAIL_BYTES]
        if not self._capping:
            if self._head_left is None or len(data) <= self._head_left:
                self._deliver_head(stream, at, data)
                return
            self._capping = True
            if self._head_delivered == 0 and self._head_left > 0:  # no line boundary to cut at
                cut = self._head_left
                self._deliver_head(stream, at, data[:cut])
                data = data[cut:]
        self._keep_in_tail(stream, at, data)

    def _deliver_head(self, stream: str, at: datetime, data: bytes) -> None:
        if self._head_left is not None:
            self._head_left -= len(data)
        self._head_delivered += len(data)
        self._sink(stream, at, data)

    def _keep_in_tail(self, stream: str, at: datetime, data: bytes) -> None:
        self._tail.append((stream, at, data))
        self._tail_size += len(data)
        while self._tail_size > self._tail_budget and len(self._tail) > 1:
            _, _, old = self._tail.popleft()
            self._tail_size -= len(old)
            self._dropped += len(old)
        if self._tail_size > self._tail_budget:  # one line longer than the whole tail budget
            s, t, only = self._tail.pop()
            excess = self._tail_size - self._tail_budget
            self._dropped += excess
            self._tail_size -= excess
            if only[excess:]:
                self._tail.append((s, t, only[excess:]))

    def finish(self, at: datetime) -> None:
        """Deliver the drop marker and the kept tail, if the cap was reached."""
        if self._dropped:
            marker_at = self._tail[0][1] if self._tail else at
            self._sink(
                "marker", marker_at, b"[cronflow: %d bytes of output dropped]\n" % self._dropped
            )
        while self._tail:
            self._sink(*self._tail.popleft())
        self._tail_size = 0

    def last_bytes(self) -> bytes:
        return bytes(self._last)
