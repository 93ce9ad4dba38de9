"""The progress bar of ``torchgmm fit``.

Owns: one self-rewriting line on stderr, fed by the estimator's per-iteration callback. Must not: print
anything else, nor decide what is fitted.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """One self-rewriting line on stderr while EM runs; silent when quiet or stderr is not a terminal."""

    def __init__(self, max_iter: int, n_init: int, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.max_iter, self.n_init = max_iter, n_init
        self.start = time.perf_counter()
        self.shown = False

    def __call__(self, iteration: int, running: int, best: float) -> None:
        if not self.enabled:
            return
        done = iteration / max(self.max_iter, 1)
        bar = "#" * int(20 * done) + "-" * (20 - int(20 * done))
        sys.stderr.write(
            f"\r[{bar}] iteration {iteration}/{self.max_iter}  running {running}/{self.n_init} restarts  "
            f"best lower bound {best:.6f}  {time.perf_counter() - self.start:.1f} s "
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
