"""Running a unit of work again when it lost a race with another instance.

A StoreConflictError means the whole transaction rolled back because another one won
(PostgreSQL: a deadlock, a serialization failure, a patient locked elsewhere, the same
retransmit committed first); the same work run again is expected to succeed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from prpgate.errors import StoreConflictError

__all__ = ["retry_conflicts"]

T = TypeVar("T")


def retry_conflicts(work: Callable[[], T], *, attempts: int = 8) -> T:
    """Run ``work`` (one whole transaction) up to ``attempts`` times while it raises
    StoreConflictError, pausing a few jittered milliseconds between runs; the last
    conflict is raised. Other errors are raised at once."""
    retrying = Retrying(
        retry=retry_if_exception_type(StoreConflictError),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.005, max=0.25),
        reraise=True,
    )
    return retrying(work)
