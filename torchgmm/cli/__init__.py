"""Command line: ``torchgmm fit | predict | score | select | plot``.

``fit`` reads data (``.npy`` memory-mapped, ``.csv``/``.tsv``/``.txt`` with or
without a header, ``.pt`` tensor, ``.parquet`` with pyarrow), fits, prints a
summary and writes a model file (and, on request, labels and
responsibilities). Every fit option can come from a YAML file
(``--config configs/NAME.yaml``) and be overridden on the command line. With no
data file, ``fit``, ``select`` and ``plot`` use Fisher's iris measurements
shipped with the package. Errors are one line on stderr and a non-zero exit
status: 2 for unusable input (files, options), 1 when fitting fails, 130 when
interrupted.

Owns: :func:`main`, the entry point (the ``torchgmm`` console script and ``python -m torchgmm``): parsing,
running the command, warnings and errors as one line on stderr, and exit statuses. Must not: hold a command's
work, options or file formats; those live in the modules of this package:

- :mod:`~torchgmm.cli.options`: the parser, ``--config`` files, option merging, building the estimator;
- :mod:`~torchgmm.cli.commands`: what each command does and prints;
- :mod:`~torchgmm.cli.readers` and :mod:`~torchgmm.cli.writers`: data files in, arrays out;
- :mod:`~torchgmm.cli.plotting`: the drawing of ``plot`` (matplotlib);
- :mod:`~torchgmm.cli.progress`: the progress bar; :mod:`~torchgmm.cli.metrics`: the adjusted Rand index;
- :mod:`~torchgmm.cli.errors`: :class:`~torchgmm.cli.errors.UsageError` (unusable input, exit status 2).
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from torchgmm.cli.commands import COMMANDS
from torchgmm.cli.errors import UsageError
from torchgmm.cli.options import build_parser
from torchgmm.cli.progress import end_line

__all__ = ["main"]


# The library's words for its parameters, where the command line has an option of its own.
_OPTION_WORDING = (
    (re.compile(r"\bchoose another checkpoint_path\b"), "choose another --checkpoint file"),
    (re.compile(r"^checkpoint_path "), "--checkpoint "),
)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, without the source line Python shows by default, below any progress bar."""
    end_line()
    print(f"torchgmm: warning ({category.__name__}): {message}", file=sys.stderr)


def _refusal(exc: Exception) -> str:
    """The first line of the library's message, in the command line's words (``--checkpoint``)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for pattern, option in _OPTION_WORDING:
        text = pattern.sub(option, text)
    return text


def _error(text: str) -> None:
    end_line()
    print(f"torchgmm: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``torchgmm ARGV`` (``sys.argv[1:]`` when None) and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return COMMANDS[args.command](args)
    except UsageError as exc:
        _error(str(exc))
        return 2
    except (ValueError, TypeError) as exc:
        _error(_refusal(exc))
        return 1
    except OSError as exc:
        _error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return 2
    except KeyboardInterrupt:
        checkpoint = getattr(args, "checkpoint", None) or ""
        saved = (
            f" The EM state is in {checkpoint}: run the same command to resume." if Path(checkpoint).is_file() else ""
        )
        _error(f"interrupted; no model file was written.{saved}")
        return 130
