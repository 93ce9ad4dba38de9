"""The command line's own error: input it cannot use.

Owns: :class:`UsageError`, raised anywhere in the command line for unusable input (files, options) and turned
by :func:`torchgmm.cli.main` into one line on stderr and exit status 2. Must not: print, or decide exit statuses.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Unusable input: printed as one line, exit status 2."""
