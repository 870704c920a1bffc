"""A status line on stdout (beside the CLI's other progress; stderr is kept for the one-line errors):
rewritten in place on a terminal every 0.5 s, else one line every 30 s. The cache's building line
and the lock's waiting line use it.

Example:
    line = StatusLine()
    line.show("myol_keras: caching ...: 10/100 images")   # shown if its interval has passed
    line.end("myol_keras: caching ...: 100/100 images")    # always shown, ends the line
"""

from __future__ import annotations

import sys
import time


class StatusLine:
    """One status line, shown at most once per interval.

    Args:
        enabled: show anything at all.
        stream: where the line goes (default `sys.stdout`).
        first: show the first `show` at once (default: only after an interval).

    Example:
        line = StatusLine(first=True); line.show("waiting ..."); line.end()
    """

    def __init__(self, enabled=True, stream=None, *, first=False):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = time.perf_counter()
        self._last = None if first else self.start
        self.shown = False

    @property
    def elapsed(self):
        return time.perf_counter() - self.start

    def show(self, text):
        """Show `text` if the interval since the last one has passed (in place on a terminal)."""
        now = time.perf_counter()
        if not self.enabled or (self._last is not None and now - self._last <= (0.5 if self.tty else 30.0)):
            return
        self.stream.write(("\r" if self.tty else "") + text + ("" if self.tty else "\n"))
        self.stream.flush()
        self._last, self.shown = now, True

    def end(self, text=None):
        """Show `text` as the last line; without text, just end a terminal's line if one was shown."""
        if not self.enabled:
            return
        if text is not None:
            self.stream.write(("\r" if self.tty else "") + text + "\n")
        elif self.tty and self.shown:
            self.stream.write("\n")
        self.stream.flush()
