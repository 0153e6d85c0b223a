"""Bounded polling for tests: wait for the state a test needs instead of sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], what: str, *, timeout: float = 30, interval: float = 0.05) -> None:
    """Return once predicate() is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def raises(exc_type: type[BaseException], fn: Callable[[], object]) -> bool:
    """True when fn() raises exc_type (a predicate for wait_until)."""
    try:
        fn()
    except exc_type:
        return True
    return False
