"""Reading data files into arrays for the commands.

Owns: the data file types the command line accepts (``.npy`` memory-mapped, ``.csv``/``.tsv``/``.txt`` with or
without a header, ``.pt`` tensor, ``.parquet`` with pyarrow, imported only when such a file is read), the
shipped iris data when no file is named, and one clear :class:`UsageError` line for every file that cannot be
used. Must not: fit anything, write files or print.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchgmm.cli.errors import UsageError
from torchgmm.datasets import load_iris

__all__ = ["DATA_SUFFIXES", "load_data", "read_data"]

DATA_SUFFIXES = (".npy", ".csv", ".tsv", ".txt", ".pt", ".parquet")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_text(path: Path) -> np.ndarray:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path) as f:
        lines = [line.rstrip("\r\n") for line in f]
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise UsageError(f"{path} is empty.")
    if path.suffix == ".txt" and delimiter not in lines[first]:
        delimiter = None  # whitespace-separated
    cells = lines[first].split(delimiter)
    skip = first + 1 if not any(_is_number(c) for c in cells) else first  # a header line
    if not any(line.strip() for line in lines[skip:]):
        raise UsageError(f"{path} has a header but no rows.")
    try:
        X = np.loadtxt(lines[skip:], delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError:
        X = None
    if X is None or X.size == 0:
        width = None
        for number, line in enumerate(lines[skip:], start=skip + 1):
            if not line.strip():
                continue
            row = line.split(delimiter)
            width = width or len(row)
            if len(row) != width:
                raise UsageError(f"{path}, line {number}: {len(row)} columns where earlier lines have {width}.")
            for column, cell in enumerate(row, start=1):
                if not _is_number(cell):
                    raise UsageError(f"{path}, line {number}, column {column}: {cell.strip()!r} is not a number.")
        if X is None:
            raise UsageError(f"{path} could not be read as numbers.")
        raise UsageError(f"{path} has a header but no rows.")
    return X


def _read_parquet(path: Path) -> np.ndarray:
    try:
        import pyarrow.parquet as pq  # an optional extra: imported only when a .parquet file is read
    except ImportError:
        raise UsageError(f"reading {path.name} needs pyarrow: pip install pyarrow") from None
    table = pq.read_table(path)
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        values = column.to_numpy()
        if not np.issubdtype(values.dtype, np.number):
            raise UsageError(f"{path}: column {name!r} is not numeric ({column.type}).")
        columns.append(values.astype(np.float64, copy=False))
    if not columns or not len(columns[0]):
        raise UsageError(f"{path} is empty.")
    return np.stack(columns, axis=1)


def read_data(path: str) -> np.ndarray | torch.Tensor:
    """Rows of a data file (see the module docstring); raises :class:`UsageError` with one clear line."""
    file = Path(path)
    if not file.exists():
        raise UsageError(f"cannot read {path}: no such file.")
    if file.is_dir():
        raise UsageError(f"cannot read {path}: it is a folder, not a data file.")
    suffix = file.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise UsageError(
            f"cannot read {path}: unknown file type {suffix or '(none)'}; use one of {', '.join(DATA_SUFFIXES)}."
        )
    if file.stat().st_size == 0:
        raise UsageError(f"{path} is empty.")
    try:
        if suffix == ".npy":
            X = np.load(file, mmap_mode="r")
        elif suffix == ".pt":
            X = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(X, torch.Tensor):
                raise UsageError(f"{path} holds a {type(X).__name__}, not a tensor of rows.")
        elif suffix == ".parquet":
            X = _read_parquet(file)
        else:
            X = _read_text(file)
    except UsageError:
        raise
    except pickle.UnpicklingError:  # torch.load(weights_only=True) refuses anything but plain tensors and values
        raise UsageError(f"cannot read {path}: not a tensor saved with torch.save (or it holds code).") from None
    except (OSError, ValueError, RuntimeError, EOFError) as exc:
        raise UsageError(f"cannot read {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
    if X.ndim != 2:
        raise UsageError(f"{path} holds an array of shape {tuple(X.shape)}; expected rows x columns (2-D).")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise UsageError(f"{path} is empty (shape {tuple(X.shape)}).")
    return X


def load_data(path: str | None) -> tuple[Any, str, np.ndarray | None]:
    """``(X, description, species)``: the file's rows, or the shipped iris data when ``path`` is None."""
    if path is None:
        X, species, _ = load_iris()
        return X, "iris (150 flowers x 4 measurements, shipped with torchgmm)", species
    X = read_data(path)
    return X, f"{path} ({X.shape[0]} rows x {X.shape[1]} columns)", None
