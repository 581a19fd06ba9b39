"""Which failures are worth another attempt, and when: a pure policy.

Permanent failures end the task at once; an error says it is one with a ``permanent`` marker
(errors.py): a model that cannot be loaded (its message tells the operator what to do), a
request the model cannot serve, content refusals, out of memory, a refused reference image or
bucket. Anything else raised while generating or storing (a full disk, a flaky network file
system, a bug) is transient: the task goes back to the queue after an exponential delay with
jitter, until its attempts run out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from aigc_image.errors import is_permanent

_JITTER = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 2.0
    max_delay: float = 300.0

    def is_transient(self, error: BaseException) -> bool:
        return not is_permanent(error)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None when attempts are used up.

        Full delay ``base * 2**(attempt - 1)`` capped at ``max_delay``, then "equal jitter":
        a random point in its upper half, so retries of tasks that failed together spread out.
        """
        if attempt >= self.max_attempts:
            return None
        full = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return full / 2 + (rng or _JITTER).uniform(0, full / 2)


class Backoff:
    """Delays between attempts to reach an unavailable task store: exponential, capped, jittered.

    Workers on many hosts lose the database together; jitter keeps them from all
    reconnecting in the same instant when it comes back.
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng or _JITTER
        self._failures = 0

    def next_delay(self) -> float:
        full = min(self.cap, self.base * 2.0**self._failures)
        self._failures += 1
        return full / 2 + self._rng.uniform(0, full / 2)

    def reset(self) -> None:
        self._failures = 0
