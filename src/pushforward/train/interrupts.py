"""Turning SIGINT/SIGTERM into a clean stop of the training loop."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class StopRequest:
    """Records the first SIGINT/SIGTERM received while training.

    A second signal of the same run raises at once (the user insists), so a
    stuck write can still be interrupted.
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise_for(signum)
        self.signal = signum


def raise_for(signum: int) -> None:
    """Raises the conventional exception for a signal.

    SIGINT raises ``KeyboardInterrupt`` (an uncaught one makes Python exit with
    status 130, as the shell expects); SIGTERM raises ``SystemExit(143)``
    (128 + 15).
    """
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + int(signum))


@contextmanager
def stop_on_signals(enabled: bool = True) -> Iterator[StopRequest]:
    """Installs SIGINT/SIGTERM handlers that only record a stop request.

    The previous handlers come back when the block ends. Outside the main
    thread (where Python allows no handlers) nothing is installed.
    """
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: dict[int, Any] = {}
    try:
        for signum in (int(signal.SIGINT), int(signal.SIGTERM)):
            previous[signum] = signal.signal(signum, request.handle)
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
