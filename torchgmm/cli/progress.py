"""The progress bar of ``torchgmm fit`` and ``select``.

Owns: one self-rewriting line on stderr, fed by the estimator's per-iteration callback, and ending that line
(:func:`end_line`) so that whatever is printed next on stderr, a warning say, starts a line of its own. Must not:
print anything else, nor decide what is fitted.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "end_line"]

_line_open = False  # a bar's line is on the terminal, not yet ended


def end_line() -> None:
    """End the bar's line on stderr, if one is open (the bar starts a new line at its next update)."""
    global _line_open
    if _line_open:
        sys.stderr.write("\n")
        sys.stderr.flush()
        _line_open = False


class Progress:
    """One self-rewriting line on stderr while EM runs; silent when quiet or stderr is not a terminal.

    ``label`` (``select``: the candidate being fitted) opens the line.
    """

    def __init__(self, max_iter: int, n_init: int, quiet: bool, label: str = "") -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.max_iter, self.n_init, self.label = max_iter, n_init, label
        self.start = time.perf_counter()
        self.shown = False
        self.width = 0  # of the longest line written: shorter ones are padded over it

    def __call__(self, iteration: int, running: int, best: float) -> None:
        global _line_open
        if not self.enabled:
            return
        done = iteration / max(self.max_iter, 1)
        bar = "#" * int(20 * done) + "-" * (20 - int(20 * done))
        line = (
            f"{self.label}[{bar}] iteration {iteration}/{self.max_iter}  running {running}/{self.n_init} restarts  "
            f"best lower bound {best:.6f}  {time.perf_counter() - self.start:.1f} s "
        )
        self.width = max(self.width, len(line))
        sys.stderr.write("\r" + line.ljust(self.width))
        sys.stderr.flush()
        self.shown = _line_open = True

    def close(self) -> None:
        """End the line, if this bar left one open."""
        if self.shown:
            end_line()
