"""Stop strings applied to streamed text.

A stop string can arrive split across chunks, so text that could still be the start of one is
held back until the next chunk decides it. The stop string itself is never returned.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text chunks in order; get back what is safe to emit and whether a stop matched."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text that can be emitted now; sets ``stopped`` when a stop string matched."""
        if self.stopped:
            return ""
        self._pending += text
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        cut = len(self._pending) - self._hold
        if cut <= 0:
            return ""
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """The held-back text, once the stream has ended without a stop."""
        out, self._pending = self._pending, ""
        return "" if self.stopped else out
