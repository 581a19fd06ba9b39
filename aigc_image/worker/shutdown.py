"""A worker's stop: asked for once (a signal, ``serve`` going away, a test), then a grace period for
the batch in hand; past it the batch is interrupted at its next step and handed back."""

from __future__ import annotations

import threading

from aigc_image.clock import Clock


class Shutdown:
    def __init__(self, clock: Clock, grace: float) -> None:
        self.grace = grace  # worker.shutdown_grace
        self._clock = clock
        self._asked = threading.Event()
        self._asked_at: float | None = None

    def request(self) -> None:
        """Stop claiming; the batch in hand has ``grace`` seconds from now. Safe from signal handlers."""
        if self._asked_at is None:
            self._asked_at = self._clock.monotonic()
        self._asked.set()

    @property
    def requested(self) -> bool:
        return self._asked.is_set()

    def past_grace(self) -> bool:
        asked = self._asked_at
        return asked is not None and self._clock.monotonic() - asked >= self.grace

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (real time), waking when a stop is requested; whether one was."""
        return self._asked.wait(seconds)
