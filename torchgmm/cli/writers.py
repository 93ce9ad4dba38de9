"""Writing the commands' arrays (labels, responsibilities, per-row scores) to files.

Owns: which file names the command line writes arrays to (``.npy``, ``.csv``, ``.tsv``, ``.txt``), checking an
output path before any work starts, and writing arrays through :func:`torchgmm._files.write_atomic` (so a failed
write leaves no half-written file). Must not: read data, fit anything or print; model files are written by the
estimator, plots by :mod:`torchgmm.cli.plotting`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchgmm._files import write_atomic
from torchgmm.cli.errors import UsageError

__all__ = ["ARRAY_SUFFIXES", "check_output", "write_array"]

ARRAY_SUFFIXES = (".npy", ".csv", ".txt", ".tsv")


def check_output(path: str, suffixes: tuple[str, ...] | None = ARRAY_SUFFIXES) -> None:
    """Fail before any work when ``path`` cannot be written (a file type we do not write, no such folder)."""
    if suffixes is not None and Path(path).suffix.lower() not in suffixes:
        raise UsageError(f"cannot write {path}: use a .npy, .csv or .tsv file name.")
    if not Path(path).resolve().parent.is_dir():
        raise UsageError(f"cannot write {path}: no such folder.")
    if Path(path).is_dir():
        raise UsageError(f"cannot write {path}: it is a folder.")


def write_array(path: str, values: Any) -> None:
    """Write ``values`` (a tensor or array) to ``path``: ``.npy`` as is, text files one row a line."""
    values = values.cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":

        def write(name):
            with open(name, "wb") as f:
                np.save(f, values)
    elif suffix in (".csv", ".txt", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        fmt = "%d" if values.dtype.kind in "iub" else "%.9g"

        def write(name):
            np.savetxt(name, values, delimiter=delimiter, fmt=fmt)
    else:
        raise UsageError(f"cannot write {path}: use a .npy, .csv or .tsv file name.")
    if not Path(path).resolve().parent.is_dir():
        raise UsageError(f"cannot write {path}: no such folder.")
    write_atomic(path, write)
