"""Ctrl-C during training: a flag checked between minibatches."""
from __future__ import annotations

import signal
import threading

__all__ = ["SigintGuard"]


class SigintGuard:
    """Turn the first Ctrl-C into a flag checked between minibatches.

    Installed only in the main thread and only over Python's default handler;
    a second Ctrl-C raises KeyboardInterrupt at once.
    """

    def __init__(self):
        self.requested = False
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False
