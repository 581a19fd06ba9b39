from __future__ import annotations

from aigc_image.clock import ManualClock
from aigc_image.protocol.ratelimit import RateLimiter


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = ManualClock()
    limiter = RateLimiter(rate=20, burst=20, clock=clock)
    assert all(limiter.allow("k", "Create") for _ in range(20))
    assert not limiter.allow("k", "Create")
    clock.advance(0.05)  # one token at 20/s
    assert limiter.allow("k", "Create")
    assert not limiter.allow("k", "Create")
    clock.advance(10)
    assert sum(limiter.allow("k", "Create") for _ in range(30)) == 20


def test_buckets_are_per_key_and_per_action() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=ManualClock())
    assert limiter.allow("a", "Create")
    assert not limiter.allow("a", "Create")
    assert limiter.allow("a", "Describe")
    assert limiter.allow("b", "Create")


def test_zero_rate_disables_the_limit() -> None:
    limiter = RateLimiter(rate=0, burst=1, clock=ManualClock())
    assert all(limiter.allow("k", "Create") for _ in range(1000))
