"""Token buckets per (SecretId, Action).

Checked only after a request's signature is verified, so a forged request naming a
key cannot spend that key's budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigc_image.clock import Clock


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self._rate = rate
        self._burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def allow(self, secret_id: str, action: str) -> bool:
        """Take one token from the key's bucket for this action; False when empty."""
        if self._rate <= 0:
            return True
        now = self._clock.monotonic()
        bucket = self._buckets.get((secret_id, action))
        if bucket is None:
            bucket = self._buckets[(secret_id, action)] = _Bucket(float(self._burst), now)
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
