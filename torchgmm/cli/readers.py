"""Reading data files into arrays for the commands.

Owns: the data file types the command line accepts (``.npy`` memory-mapped, ``.csv``/``.tsv``/``.txt`` with or
without a header, ``.pt`` tensor, ``.parquet`` with pyarrow, imported only when such a file is read), the
separator of a text file (found from its first lines), the check that every value is a finite number (with its
place in the file: line and column of a text file, row and column of an array; memory-mapped files are scanned
in blocks), the shipped iris data when no file is named, row weights from a file (``--sample-weight``) or from a
named column of the data (``--weight-column``, split off the features), and one clear :class:`UsageError` line
for every file that cannot be used. Must not: fit anything, write files or print.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchgmm.cli.errors import UsageError
from torchgmm.datasets import load_iris

__all__ = ["DATA_SUFFIXES", "SEPARATORS", "load_data", "read_data", "read_table", "read_weights", "weight_column_of"]

DATA_SUFFIXES = (".npy", ".csv", ".tsv", ".txt", ".pt", ".parquet")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")

# The separators tried on a text file, in order of preference (None: runs of whitespace).
SEPARATORS: dict[str, tuple[tuple[str | None, str], ...]] = {
    ".csv": ((",", "comma"), (";", "semicolon"), ("\t", "tab")),
    ".txt": ((",", "comma"), (";", "semicolon"), ("\t", "tab"), (None, "whitespace")),
    ".tsv": (("\t", "tab"),),
}
SAMPLE_LINES = 50  # the first lines with data that decide the separator
BLOCK_VALUES = 1 << 22  # values per block when arrays are scanned for NaN and infinity


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _not_finite(path: Any, where: str, value: str) -> UsageError:
    return UsageError(f"{path}, {where}: {value} is not a finite number; remove or impute it.")


# ------------------------------------------------------------------------------------ text files


def _header(cells: list[str]) -> bool:
    """A first line of names, not numbers."""
    return not any(_is_number(cell) for cell in cells)


def _joined_numbers(cell: str) -> bool:
    """``1|2``, ``1 2``: numbers joined by something that is not one of the separators tried."""
    parts = re.split(r"[^0-9A-Za-z.+\-]+", cell.strip())
    return len(parts) > 1 and all(_is_number(part) for part in parts)


def _separator(path: Path, sample: list[str]) -> str | None:
    """The separator of a text file whose first lines with data are ``sample``.

    The one that splits every sampled line into the same number (more than one) of columns, the one with the
    most numbers among those; else the only one that appears at all (reading then names the line that does not
    fit); else one column. Raises :class:`UsageError` when the separator looks like none of those tried.
    """
    candidates = SEPARATORS.get(path.suffix.lower(), SEPARATORS[".csv"])
    if len(candidates) == 1:
        return candidates[0][0]
    tables = []
    for separator, _ in candidates:
        widths = {len(line.split(separator)) for line in sample}
        if len(widths) == 1 and widths.pop() > 1:
            body = sample[1:] if _header(sample[0].split(separator)) else sample
            tables.append((sum(_is_number(cell) for line in body for cell in line.split(separator)), separator))
    if tables:
        return max(tables, key=lambda table: table[0])[1]  # the first of equals: the order of preference
    present = [separator for separator, _ in candidates if any(len(line.split(separator)) > 1 for line in sample)]
    if len(present) == 1:
        return present[0]
    body = sample[1:] if _header([sample[0]]) else sample
    if not present and not (body and _joined_numbers(body[0])):
        return candidates[0][0]  # one column
    names = ", ".join(name for _, name in candidates)
    raise UsageError(
        f"{path}: the separator looks wrong: none of {names} splits its first lines into the same number "
        "of numeric columns; separate the columns with one of them."
    )


def _first_bad_cell(path: Path, rows: list[tuple[int, str]], separator: str | None) -> None:
    """Raise :class:`UsageError` for the first line of another width, or cell that is not a finite number."""
    width = None
    for number, text in rows:
        row = text.split(separator)
        width = width or len(row)
        if len(row) != width:
            raise UsageError(f"{path}, line {number}: {len(row)} columns where earlier lines have {width}.")
        for column, cell in enumerate(row, start=1):
            if not _is_number(cell):
                raise UsageError(f"{path}, line {number}, column {column}: {cell.strip()!r} is not a number.")
            if not math.isfinite(float(cell)):
                raise _not_finite(path, f"line {number}, column {column}", repr(cell.strip()))


def _names(cells: list[str]) -> list[str]:
    """Column names of a header line, without surrounding spaces and quotes."""
    return [cell.strip().strip("\"'").strip() for cell in cells]


def _read_text(path: Path) -> tuple[np.ndarray, list[str] | None]:
    rows = []  # (line number in the file, text before any '#' comment) of the lines with data
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            text = line.rstrip("\r\n").split("#", 1)[0]
            if text.strip():
                rows.append((number, text))
    if not rows:
        raise UsageError(f"{path} is empty.")
    separator = _separator(path, [text for _, text in rows[:SAMPLE_LINES]])
    names = None
    if _header(rows[0][1].split(separator)):
        names = _names(rows[0][1].split(separator))
        rows = rows[1:]
        if not rows:
            raise UsageError(f"{path} has a header but no rows.")
    try:
        X = np.loadtxt([text for _, text in rows], delimiter=separator, ndmin=2, dtype=np.float64, comments=None)
    except ValueError:
        _first_bad_cell(path, rows, separator)
        raise UsageError(f"{path} could not be read as numbers.") from None
    bad = _first_not_finite(X)
    if bad is not None:
        row, column, _ = bad
        number, text = rows[row]
        raise _not_finite(path, f"line {number}, column {column + 1}", repr(text.split(separator)[column].strip()))
    return X, names


# ------------------------------------------------------------------------------------ arrays


def _first_not_finite(X: np.ndarray | torch.Tensor) -> tuple[int, int, float] | None:
    """``(row, column, value)`` of the first NaN or infinity of a 2-D array, read in blocks of rows; or None."""
    if isinstance(X, torch.Tensor):
        if not (X.is_floating_point() or X.is_complex()):
            return None
    elif X.dtype.kind not in "fc":
        return None
    step = max(1, BLOCK_VALUES // max(1, X.shape[1]))
    for start in range(0, X.shape[0], step):
        block = X[start : start + step]
        bad = ~torch.isfinite(block) if isinstance(block, torch.Tensor) else ~np.isfinite(np.asarray(block))
        if bad.any():
            row, column = (int(i) for i in (bad.nonzero()[0] if isinstance(bad, torch.Tensor) else np.argwhere(bad)[0]))
            return start + row, column, block[row, column].item()
    return None


def _read_parquet(path: Path) -> tuple[np.ndarray, list[str]]:
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
    return np.stack(columns, axis=1), list(table.column_names)


def read_data(path: str) -> np.ndarray | torch.Tensor:
    """Rows of a data file (see the module docstring); raises :class:`UsageError` with one clear line."""
    return read_table(path)[0]


def read_table(path: str) -> tuple[np.ndarray | torch.Tensor, list[str] | None]:
    """Rows of a data file and its column names (a text file's header, a Parquet file's columns; None for a
    file without names); raises :class:`UsageError` with one clear line."""
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
    names = None
    try:
        if suffix == ".npy":
            X = np.load(file, mmap_mode="r")
        elif suffix == ".pt":
            X = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(X, torch.Tensor):
                raise UsageError(f"{path} holds a {type(X).__name__}, not a tensor of rows.")
        elif suffix == ".parquet":
            X, names = _read_parquet(file)
        else:
            return _read_text(file)  # (checked line by line, with the file's line numbers)
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
    bad = _first_not_finite(X)
    if bad is not None:
        row, column, value = bad
        raise _not_finite(path, f"row {row + 1}, column {column + 1}", value)
    return X, names


def weight_column_of(path: str, X: np.ndarray | torch.Tensor, names: list[str] | None, column: str) -> tuple[Any, Any]:
    """``(features, weights)``: ``X`` without its column named ``column``, and that column (``--weight-column``).

    Raises :class:`UsageError` for a file without column names, a name it does not have, or a name that leaves
    no feature.
    """
    if names is None:
        raise UsageError(
            f"--weight-column {column} needs column names, and {path} has none (a .csv, .tsv or .txt file with a "
            "header line, or .parquet, has them); give the weights with --sample-weight FILE instead."
        )
    if column not in names:
        raise UsageError(f"{path} has no column {column!r}; its columns are {', '.join(map(repr, names))}.")
    if len(names) == 1:
        raise UsageError(f"{path}: --weight-column {column} is its only column, which leaves no feature to fit.")
    index = names.index(column)
    keep = [i for i in range(X.shape[1]) if i != index]
    return X[:, keep], X[:, index]


def read_weights(path: str, rows: int, data: str) -> np.ndarray:
    """One weight per row of ``data`` (``rows`` of them) from a file: a column, or a 1-D ``.npy`` array or tensor.

    Their values (non-negative, finite, not all zero) are the estimator's to check.
    """
    file = Path(path)
    if file.suffix.lower() in (".npy", ".pt") and file.is_file() and file.stat().st_size:
        try:
            w = np.load(file) if file.suffix.lower() == ".npy" else torch.load(file, weights_only=True)
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise UsageError(f"cannot read {path}: {(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
        w = np.asarray(w.numpy() if isinstance(w, torch.Tensor) else w, dtype=np.float64)
        w = w[:, None] if w.ndim == 1 else w
    else:
        w = np.asarray(read_data(path), dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != 1:
        raise UsageError(f"{path} holds an array of shape {tuple(w.shape)}; --sample-weight needs one column.")
    if w.shape[0] != rows:
        raise UsageError(f"{path} has {w.shape[0]} weights for the {rows} rows of {data}; give one per row.")
    return w[:, 0]


def load_data(
    path: str | None, sample_weight: str | None = None, weight_column: str | None = None
) -> tuple[Any, str, np.ndarray | None, np.ndarray | None]:
    """``(X, description, species, weights)``: the file's rows, or the shipped iris data when ``path`` is None,
    and their weights from the file ``sample_weight`` or the data's column ``weight_column`` (None without)."""
    if sample_weight is not None and weight_column is not None:
        raise UsageError("give the row weights with --sample-weight FILE or --weight-column NAME, not both.")
    if path is None:
        if weight_column is not None:
            raise UsageError(f"--weight-column {weight_column} needs a data file; the shipped iris data has none.")
        X, species, _ = load_iris()
        description, weights = "iris (150 flowers x 4 measurements, shipped with torchgmm)", None
    else:
        X, names = read_table(path)
        species, weights = None, None
        if weight_column is not None:
            X, weights = weight_column_of(path, X, names, weight_column)
        weighted = f", weights from column {weight_column!r}" if weight_column is not None else ""
        description = f"{path} ({X.shape[0]} rows x {X.shape[1]} columns{weighted})"
    if sample_weight is not None:
        weights = read_weights(sample_weight, X.shape[0], description)
    return X, description, species, weights
