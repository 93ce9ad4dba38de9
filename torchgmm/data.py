"""Data sources served to the EM passes as chunks of rows on the compute device.

Owns: reading every kind of input in chunks (the sources), the first pass that checks and scans it
(:func:`scan`), and the immutable :class:`ScannedData` whose chunks come centred, cast and on the compute
device. Must not: compute densities or statistics, choose chunk sizes (callers pass them), or keep state
from one pass to the next.

Every pass over the data (validation, E-step, initialisation, scoring) asks
its source for chunks of at most ``rows`` rows, moved to the compute device as
they are used, cast to the compute dtype and centred on a fixed ``shift`` (the
data mean, found by the first pass), so float32 arithmetic on data with a
large offset keeps its precision. The whole data set is never copied to the
device at once: only a tensor that already lives there is used in place.

Sources (see :func:`make_source`): a tensor; a NumPy array or memmap (read
chunk by chunk; a memmap by plain file reads, so the pages it reads do not
stay in the process's resident memory); any array-like with ``__len__`` and
slicing; a map-style ``torch.utils.data.Dataset`` (read through a
``DataLoader``); a ``DataLoader``; or any iterable of ``[n, D]`` chunks that
starts over each time it is iterated (a list of arrays, say). Batches that are tuples ``(features, labels,
...)`` give their features; with ``sample_weight='chunks'`` (:data:`CHUNK_WEIGHTS`) every batch must be a tuple
``(features, ..., weights)`` whose last element holds one weight per row, which the first pass collects.

Under ``torch.distributed`` each rank's source is its shard; the row indices a
source reports are global (shards in rank order), so anything drawn per row
(seeding samples, random initial responsibilities) does not depend on how the
rows are split between ranks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import mmap
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torchgmm import distributed
from torchgmm._validation import (
    check_2d,
    check_array,
    check_sample_weight,
    first_bad_weight,
    first_not_finite,
    foreign_namespace,
    weight_tensor,
)

__all__ = [
    "DataSource",
    "ScannedData",
    "make_source",
    "input_source",
    "scan",
    "scanned",
    "uniform_hash",
    "is_chunked",
    "CHUNK_WEIGHTS",
]

# The value of ``sample_weight`` that takes each row's weight from the batches of a chunked source.
CHUNK_WEIGHTS = "chunks"

_SCAN_ROWS = 1 << 16


class DataSource:
    """A reader of chunks of rows from some storage; subclasses implement :meth:`read`.

    A source only reads: it knows nothing of devices, dtypes or the data's mean. :func:`scan` reads it once
    and returns the :class:`ScannedData` that every later pass uses.
    """

    name = "X"
    described_as_chunks = False  # errors name "chunk i, row j of the chunk" rather than "row j"
    # Rows read from the storage per step (the estimator's batch_size); None: as many as a compute tile. A
    # pass splits what it reads into tiles of its own size, so this sets I/O granularity, not working memory.
    read_rows: int | None = None
    # Whether every chunk carries its rows' weights (``sample_weight='chunks'``), read by :meth:`read_weighted`.
    carries_weights = False

    @property
    def gives_tensors(self) -> bool:
        """Whether the input holds tensors (outputs then follow as tensors)."""
        return False

    def read(self, rows: int) -> Iterator[Tensor]:
        """Yield raw chunks ``[n, D]`` (any numeric dtype, any device) of at most about ``rows`` rows, in order."""
        raise NotImplementedError

    def read_weighted(self, rows: int) -> Iterator[tuple[Tensor, Any]]:
        """Yield ``(chunk, weights)``: the chunks of :meth:`read` and, when the source carries weights, each
        chunk's raw weights as the batch gave them (checked by :func:`scan`); else None."""
        return ((raw, None) for raw in self.read(rows))

    def peek(self) -> Tensor:
        """The first raw chunk (to learn the input's dtype and device); raises if there is none."""
        for raw in self.read(1):
            return raw
        raise ValueError(f"{self.name} is empty: it gave no rows.")


@dataclass(frozen=True)
class ScannedData:
    """A source after its first pass (:func:`scan`): what every later pass over the data reads. Immutable.

    Attributes
    ----------
    source : DataSource
    device : torch.device
        Where chunks are computed on.
    dtype : torch.dtype
        The compute dtype chunks are cast to.
    n_features : int
    n_samples : int
        Rows over all ranks.
    local_samples, offset : int
        Rows of this rank and the global index of its first row.
    shift : Tensor of shape (D,), float64
        The point chunks are centred on (the data mean, or a checkpoint's).
    weights : Tensor of shape (local_samples,), float64, optional
        This rank's row weights (``sample_weight``), on ``device``; None: every row weighs 1.
    total_weight : float
        The weights' sum over all ranks (``n_samples`` without weights): what per-row means divide by.
    """

    source: DataSource
    device: torch.device
    dtype: torch.dtype
    n_features: int
    n_samples: int
    local_samples: int
    offset: int
    shift: Tensor
    weights: Tensor | None = None
    total_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.weights is None:
            object.__setattr__(self, "total_weight", float(self.n_samples))

    def with_sample_weight(self, sample_weight: Any, collective: bool = True) -> ScannedData:
        """The same data weighted by a user's ``sample_weight``: None (as it is), ``'chunks'`` (the weights
        :func:`scan` collected from the batches) or one weight per row of this rank, checked here (on every
        rank at once when ``collective``)."""
        if sample_weight is None or check_weights_kind(sample_weight):
            return self  # ('chunks': scan read them, make_source was asked for them)
        with distributed.together(collective):
            weights = check_sample_weight(sample_weight, self.local_samples)
        return self.with_weights(weights, collective)

    def with_weights(self, weights: Tensor, collective: bool = True) -> ScannedData:
        """The same data with row weights (checked: ``local_samples`` finite non-negative values); their
        total is summed over ranks when ``collective``.

        Raises
        ------
        ValueError
            If every weight (over all ranks) is zero.
        """
        weights = weights.to(self.device, torch.float64)
        total = weights.sum().reshape(1)
        if collective:
            distributed.all_reduce_(total)
        if float(total) <= 0.0:
            raise ValueError("sample_weight is zero for every row: at least one row must have a positive weight.")
        return dataclasses.replace(self, weights=weights, total_weight=float(total))

    @property
    def mean_weight(self) -> float:
        """The weight of a mean row (1 without weights): what "half a row's worth" of mass is measured in."""
        return self.total_weight / self.n_samples

    def weights_of(self, start: int, n: int) -> Tensor | None:
        """The weights of the ``n`` rows from global index ``start`` on (a chunk's), or None without weights."""
        if self.weights is None:
            return None
        return self.weights[start - self.offset : start - self.offset + n]

    @property
    def name(self) -> str:
        return self.source.name

    def with_shift(self, shift: Tensor) -> ScannedData:
        """The same data centred on another point (a checkpoint's data mean)."""
        return dataclasses.replace(self, shift=shift)

    def _on_device(self, rows: int) -> Iterator[Tensor]:
        """Raw tiles of at most ``rows`` rows on the compute device.

        The source is read in steps of its ``read_rows`` (``rows`` when None) and each step is split into
        tiles, so a large ``batch_size`` costs one step of ``batch_size`` rows and never larger temporaries.
        On CUDA, host tiles are pinned and copied on a side stream one tile ahead, so the copy of the next
        tile overlaps the work on this one.
        """
        block = self.source.read_rows or rows
        pieces = (piece for raw in self.source.read(block) for piece in torch.split(raw, rows))
        if self.device.type != "cuda":
            yield from (p.to(self.device) for p in pieces)
            return
        stream = torch.cuda.Stream(self.device)

        def issue(piece: Tensor) -> Tensor:
            if piece.device == self.device:
                return piece
            if piece.device.type != "cpu":  # another GPU: a plain peer copy
                return piece.to(self.device)
            with torch.cuda.stream(stream):
                return piece.pin_memory().to(self.device, non_blocking=True)

        ahead = None
        for piece in pieces:
            current, ahead = ahead, issue(piece)
            if current is not None:
                yield _ready(current, stream)
        if ahead is not None:
            yield _ready(ahead, stream)

    def _centred(self, raw: Tensor) -> Tensor:
        work = torch.promote_types(raw.dtype, self.dtype) if raw.is_floating_point() else self.dtype
        return (raw.to(work) - self.shift.to(work)).to(self.dtype)

    def chunks(self, rows: int) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(start, x)``: ``x [n, D]``, at most ``rows`` (a compute tile) centred rows from global index
        ``start`` on."""
        start = self.offset
        seen = 0
        for raw in self._on_device(rows):
            yield start, self._centred(raw)
            start += raw.shape[0]
            seen += raw.shape[0]
        if seen != self.local_samples:
            raise ValueError(
                f"{self.name} gave {self.local_samples} rows in its first pass but {seen} in a later one; "
                "the data must be the same on every pass."
            )

    def sample(self, size: int, seed: int) -> Tensor:
        """A uniform sample of ``min(size, N)`` centred rows, the same on every rank.

        Each row gets a key hashed from ``seed`` and its global index; the rows
        with the smallest keys are kept. One pass over the data. With row weights, the key ``u`` becomes
        ``-log(1 - u) / w`` (an exponential race: rows enter in proportion to their weight, rows of weight zero
        never), and rows of weight zero are left out even when the sample would take every row.
        """
        keys = torch.empty(0, dtype=torch.float64, device=self.device)
        kept = torch.empty(0, self.n_features, dtype=self.dtype, device=self.device)
        # unweighted keys are below 1; once `size` rows are kept, only smaller keys can enter
        threshold = 2.0 if self.weights is None else math.inf
        for start, x in self.chunks(_SCAN_ROWS):
            chunk_keys = uniform_hash(seed, torch.arange(start, start + x.shape[0], device=self.device))
            w = self.weights_of(start, x.shape[0])
            if w is not None:
                chunk_keys = torch.where(w > 0, -torch.log1p(-chunk_keys) / w, math.inf)  # weight 0: never
            enter = chunk_keys < threshold
            keys, kept = torch.cat([keys, chunk_keys[enter]]), torch.cat([kept, x[enter]])
            if keys.shape[0] > size:
                keys, kept = _smallest(keys, kept, size)
                threshold = float(keys[-1])
        keys, kept = _smallest(keys, kept, size)  # in key order, however the rows were split
        if distributed.is_distributed():
            padded_keys = torch.full((size,), 2.0 if self.weights is None else math.inf, device=self.device).double()
            padded_rows = torch.zeros(size, self.n_features, dtype=self.dtype, device=self.device)
            padded_keys[: keys.shape[0]] = keys
            padded_rows[: kept.shape[0]] = kept
            keys = torch.cat(distributed.all_gather_tensors(padded_keys))
            kept = torch.cat(distributed.all_gather_tensors(padded_rows))
            keys, kept = _smallest(keys, kept, min(size, self.n_samples))
            kept = kept[torch.isfinite(keys)]  # no padding (ranks with fewer rows of positive weight)
        return kept


def _ready(chunk: Tensor, stream: Any) -> Tensor:
    main = torch.cuda.current_stream(chunk.device)
    main.wait_stream(stream)
    chunk.record_stream(main)
    return chunk


def scan(
    source: DataSource,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    collective: bool = True,
    check_finite: bool = True,
) -> ScannedData:
    """First pass over ``source``: check every chunk, count rows, find the mean to centre on.

    Parameters
    ----------
    source : DataSource
    device : torch.device, optional
        Where later passes compute (default: CPU).
    dtype : torch.dtype
        Their compute dtype.
    collective : bool
        Fitting: counts and sums are over all ranks, and an error of this rank's pass is raised on every rank
        (see :func:`torchgmm.distributed.together`); a rank without rows is refused.
    check_finite : bool
        Refuse NaN and infinity (in-memory arrays are checked before, as a whole).

    Raises
    ------
    ValueError
        Naming the chunk and row of the first NaN or infinity, a chunk of another width than the first, or an
        empty source; for a source that carries weights, a chunk without weights, or weights of another length
        than the chunk's rows, negative, NaN or infinite (naming the chunk and row), or zero for every row.
    """
    device = device or torch.device("cpu")
    with distributed.together(collective):
        count, total, n_features, weights = _local_scan(source, device, check_finite)
    if collective:
        distributed.check_same(n_features=n_features)
    counts = torch.tensor([count], dtype=torch.float64, device=device)
    shard_counts = [count]
    if collective:
        shard_counts = [int(c) for c in torch.cat(distributed.all_gather_tensors(counts)).tolist()]
        distributed.all_reduce_(total)
    n_samples = sum(shard_counts)
    data = ScannedData(
        source=source,
        device=device,
        dtype=dtype,
        n_features=n_features,
        n_samples=n_samples,
        local_samples=count,
        offset=sum(shard_counts[: distributed.rank()]) if collective else 0,
        shift=total / n_samples,
    )
    return data if weights is None else data.with_weights(weights, collective)


def _local_scan(source: DataSource, device: torch.device, check_finite: bool) -> tuple[int, Tensor, int, Tensor | None]:
    """The checks and sums of :func:`scan` over this rank's rows: ``(rows, column sums in float64, features,
    the rows' weights)`` (weights: float64 on ``device`` when the source carries them, else None).

    No collectives, so that its errors can be exchanged before any.
    """
    total = None
    count = 0
    n_features = None
    name = source.name
    weights = []
    for index, (raw, raw_weights) in enumerate(source.read_weighted(_SCAN_ROWS)):
        if raw.dim() != 2:
            raise ValueError(
                f"Chunk {index} of {name} has shape {tuple(raw.shape)}; chunks must be 2-D (rows, features)."
            )
        if n_features is None:
            n_features = raw.shape[1]
        elif raw.shape[1] != n_features:
            raise ValueError(
                f"Chunk {index} of {name} has {raw.shape[1]} columns, but earlier chunks have {n_features}."
            )
        bad = first_not_finite(raw) if check_finite else None
        if bad is not None:
            row, col, what = bad
            where = (
                f"chunk {index}, row {row} of the chunk (row {count + row} of {name}), column {col}"
                if source.described_as_chunks
                else f"first at row {count + row}, column {col}"
            )
            raise ValueError(f"Input {name} contains {what} ({where}); remove or impute those values.")
        if source.carries_weights:
            weights.append(_chunk_weights(raw_weights, raw.shape[0], index, count, name).to(device))
        part = raw.to(device, torch.float64).sum(0)
        total = part if total is None else total + part
        count += raw.shape[0]
    if count == 0:  # (every rank must hold rows: the passes accumulate from their chunks)
        raise ValueError(f"{name} is empty: it gave no rows.")
    return count, total, n_features, torch.cat(weights) if source.carries_weights else None


def _chunk_weights(raw: Any, rows: int, index: int, before: int, name: str) -> Tensor:
    """The weights a batch carried for its ``rows`` rows (chunk ``index``, after ``before`` rows), checked."""
    where = f"chunk {index} of {name}"
    if raw is None:
        before_it = ", though the chunks before it do" if index else ""
        raise ValueError(
            f"sample_weight='chunks', but {where} carries no weights{before_it}: every batch must be a tuple "
            "(rows, ..., weights) whose last element holds one weight per row."
        )
    w = weight_tensor(raw, f"the weights of {where}")
    if w.dim() == 2 and w.shape[1] == 1 or w.dim() == 0 and rows == 1:
        w = w.reshape(-1)  # a column of weights, or one row's weight as a scalar
    if w.dim() != 1 or w.shape[0] != rows:
        raise ValueError(f"{where} has weights of shape {tuple(w.shape)} for its {rows} rows; give one per row.")
    row = first_bad_weight(w)
    if row is not None:
        raise ValueError(
            f"sample_weight must be finite and non-negative; {where}, row {row} of the chunk "
            f"(row {before + row} of {name}), has {float(w[row])!r}."
        )
    return w


def _smallest(keys: Tensor, rows: Tensor, size: int) -> tuple[Tensor, Tensor]:
    if keys.shape[0] <= size:
        order = keys.argsort()
    else:
        order = keys.topk(size, largest=False).indices
        order = order[keys[order].argsort()]
    return keys[order], rows[order]


_MASK32 = (1 << 32) - 1


def _mix32(x: Tensor) -> Tensor:
    # An integer hash (xorshift-multiply rounds) on values below 2**32, computed in
    # int64 with multipliers below 2**31 so that no product overflows.
    for multiplier in (0x7FEB352D, 0x2C1B3C6D, 0x297A2D39):
        x = x ^ (x >> 16)
        x = (x * multiplier) & _MASK32
    return x ^ (x >> 16)


def uniform_hash(seed: int, index: Tensor) -> Tensor:
    """Uniform numbers in (0, 1), float64, a fixed function of ``seed`` and integer ``index``.

    Used for anything drawn per row, so the draw of a row does not depend on
    the chunking of the data or the number of ranks.
    """
    seed_lo, seed_hi = seed & _MASK32, (seed >> 32) & _MASK32
    low = _mix32((index & _MASK32) ^ seed_lo)
    high = _mix32(((index >> 32) & _MASK32) ^ seed_hi ^ low)
    return (high.to(torch.float64) + 0.5) / 2.0**32


class TensorSource(DataSource):
    """A tensor (on any device), read as row slices of it."""

    def __init__(self, X: Tensor) -> None:
        self.X = X

    @property
    def gives_tensors(self) -> bool:
        return True

    def read(self, rows):
        yield from torch.split(self.X, rows)


class ArraySource(DataSource):
    """A NumPy array or any array-like with ``__len__`` and row slicing (h5py, zarr, ...)."""

    def __init__(self, X: Any) -> None:
        shape = getattr(X, "shape", None)
        if shape is not None:
            check_2d(tuple(shape), self.name)
        self.X = X

    def read(self, rows):
        for start in range(0, len(self.X), rows):
            yield _as_chunk(self.X[start : start + rows])


def _file_position(X: np.memmap) -> int | None:
    """Where in its file the first byte of ``X`` lies, or None if ``X`` must be read through its mapping.

    A row slice of a memmap keeps its parent's ``offset``, so the position
    comes from the data pointer; a copy-on-write memmap (mode ``'c'``) may hold
    changes that are not in the file.
    """
    mapping = getattr(X, "_mmap", None)
    if mapping is None or not X.filename or X.mode == "c" or not X.flags.c_contiguous:
        return None
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    mapped_from = X.offset - X.offset % mmap.ALLOCATIONGRANULARITY
    return mapped_from + (X.ctypes.data - base)


class MemmapSource(DataSource):
    """A C-ordered ``np.memmap`` (or ``.npy`` file), read with ``pread``: no pages stay mapped."""

    def __init__(self, X: np.memmap) -> None:
        self.filename, self.file_offset = X.filename, _file_position(X)
        self.shape, self.array_dtype = X.shape, X.dtype

    def read(self, rows):
        if self.array_dtype.kind == "c":
            raise ValueError(
                f"Complex data not supported: {self.name} has dtype {self.array_dtype}; a mixture needs real numbers."
            )
        if self.array_dtype.kind not in "biuf":
            raise ValueError(f"{self.name} must contain numbers, got an array of dtype {self.array_dtype}.")
        n, d = self.shape
        row_bytes = d * self.array_dtype.itemsize
        fd = os.open(self.filename, os.O_RDONLY)
        try:
            for start in range(0, n, rows):
                count = min(rows, n - start)
                buffer = np.empty((count, d), dtype=self.array_dtype)
                view = memoryview(buffer).cast("B")
                done = 0
                while done < count * row_bytes:
                    got = os.preadv(fd, [view[done:]], self.file_offset + start * row_bytes + done)
                    if got == 0:
                        raise ValueError(f"{self.filename} ended before its {n} rows were read.")
                    done += got
                yield torch.from_numpy(buffer)
        finally:
            os.close(fd)


class IterableSource(DataSource):
    """An iterable of chunks that starts over on every ``iter()`` (or a ``DataLoader``)."""

    described_as_chunks = True

    def __init__(self, X: Iterable) -> None:
        self.X = X

    @functools.cached_property
    def gives_tensors(self) -> bool:
        for chunk in self.X:
            return isinstance(_features(chunk), Tensor)
        return False

    def read(self, rows):
        return (raw for raw, _ in self._batches(weighted=False))

    def read_weighted(self, rows):
        return self._batches(self.carries_weights)

    def _batches(self, weighted: bool) -> Iterator[tuple[Tensor, Any]]:
        for index, chunk in enumerate(self.X):
            try:
                raw = _as_chunk(_features(chunk))
            except ValueError as exc:
                raise ValueError(f"Chunk {index} of {self.name}: {exc}") from None
            yield raw, (_weights(chunk) if weighted else None)


def _is_batch(chunk: Any) -> bool:
    """A ``(features, labels, ...)`` tuple rather than a chunk of rows written as a list of rows."""
    return isinstance(chunk, (tuple, list)) and bool(chunk) and not np.isscalar(chunk[0])


def _features(chunk: Any) -> Any:
    """The features of a ``(features, labels, ...)`` batch; any other chunk as it is."""
    return chunk[0] if _is_batch(chunk) else chunk


def _weights(chunk: Any) -> Any:
    """The last element of a ``(features, ..., weights)`` batch; None for a chunk that is not such a batch."""
    return chunk[-1] if _is_batch(chunk) and len(chunk) >= 2 else None


def _as_chunk(chunk: Any) -> Tensor:
    if isinstance(chunk, Tensor):
        t = chunk.detach()
    else:
        arr = np.asarray(chunk)
        if arr.dtype == object:  # numbers held as Python objects, converted as for an in-memory X
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError("chunks must contain numbers, got dtype object.") from None
        if arr.dtype.kind not in "biufc":  # (complex is refused below, in scikit-learn's words)
            raise ValueError(f"chunks must contain numbers, got dtype {arr.dtype}.")
        # a copy where the array is read-only (torch warns about those) or not C-ordered; a scalar stays
        # 0-D (ascontiguousarray would make it a row), so the first pass refuses it as not 2-D
        contiguous = arr.flags.c_contiguous and arr.flags.writeable
        t = torch.from_numpy(arr if contiguous else np.array(arr, order="C"))
    if t.is_complex():
        raise ValueError(f"Complex data not supported: chunks have dtype {t.dtype}; a mixture needs real numbers.")
    if t.dim() == 1:
        t = t.unsqueeze(0)  # a single row (a map-style Dataset read item by item)
    return t


def is_chunked(X: Any) -> bool:
    """True for inputs read as a stream of chunks (not one in-memory array)."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(X, (Tensor, np.ndarray)):
        return isinstance(X, np.memmap)
    if foreign_namespace(X) is not None:
        return False  # another array API library's array (CuPy, array-api-strict): in memory, read via DLPack
    if isinstance(X, (DataLoader, Dataset)):
        return True
    if isinstance(X, (list, tuple)):  # of 2-D chunks, or of (rows, ...) batches
        first = _features(X[0]) if X else None
        return isinstance(first, (Tensor, np.ndarray)) and np.ndim(first) == 2
    if isinstance(X, (str, bytes, Mapping)) or type(X).__module__.startswith("scipy.sparse"):
        return False  # (sparse input and mappings are refused by the array checks, with advice)
    # array-likes read by row slices (h5py, zarr, data frames, ...), or iterables of chunks
    return (hasattr(X, "__len__") and hasattr(X, "__getitem__")) or hasattr(X, "__iter__")


def make_source(X: Any, batch_size: int | None = None, chunk_weights: bool = False) -> DataSource:
    """The :class:`DataSource` for ``X`` (see the module docstring for what ``X`` may be); :func:`scan` it next.

    ``batch_size`` becomes the source's ``read_rows`` (and a ``Dataset``'s ``DataLoader`` batch).
    ``chunk_weights``: each batch of ``X`` carries its rows' weights as its last element
    (``sample_weight='chunks'``).

    Raises
    ------
    ValueError
        If ``X`` is an iterator that can be read only once, or ``chunk_weights`` is asked of an ``X`` that is
        not read as batches (an array, a tensor or an array-like read by slices).
    """
    source = _source_for(X, batch_size)
    source.read_rows = batch_size
    if chunk_weights:
        if not isinstance(source, IterableSource):
            raise ValueError(
                f"sample_weight='chunks' takes the weights from X's batches, but X ({type(X).__name__}) is read "
                "as rows, not (rows, weights) batches: pass sample_weight as an array with one weight per row."
            )
        source.carries_weights = True
    return source


def _source_for(X: Any, batch_size: int | None) -> DataSource:
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(X, Tensor):
        return TensorSource(X.detach())
    if isinstance(X, np.memmap) and X.ndim == 2 and _file_position(X) is not None:
        return MemmapSource(X)
    if isinstance(X, np.ndarray):
        return ArraySource(X)
    if isinstance(X, Dataset) and not isinstance(X, IterableDataset):
        X = DataLoader(X, batch_size=batch_size or 4096, shuffle=False)
    if iter(X) is X:
        raise ValueError(
            "X is an iterator, which can be read only once, but EM reads the data once per iteration. "
            "Pass a list of chunks, a Dataset or DataLoader, or an object whose __iter__ starts a new pass."
        )
    if (
        not isinstance(X, (list, tuple, DataLoader, IterableDataset))
        and hasattr(X, "__len__")
        and hasattr(X, "__getitem__")
    ):
        return ArraySource(X)
    return IterableSource(X)


def input_source(
    X: Any, batch_size: int | None = None, n_features: int | None = None, sample_weight: Any = None
) -> tuple[DataSource, Any, Tensor]:
    """The source for a user's ``X``, what outputs should look like, and its first rows (their dtype and device).

    An in-memory array is checked whole here (:func:`torchgmm._validation.check_array`); a chunked source is
    checked chunk by chunk by :func:`scan`. ``n_features``, when given, is the width ``X`` must have; a
    ``sample_weight`` of ``'chunks'`` asks for a source whose batches carry weights (:func:`make_source`).
    """
    chunk_weights = check_weights_kind(sample_weight)
    if is_chunked(X) or chunk_weights:
        source = make_source(X, batch_size, chunk_weights)
        first = source.peek()
        if n_features is not None and first.shape[-1] != n_features:
            raise ValueError(
                f"X has {first.shape[-1]} features, but GaussianMixture is expecting {n_features} features as input."
            )
        return source, (first if source.gives_tensors else np.empty(0)), first
    first = check_array(X, n_features=n_features)
    # (views of the tensor: batch_size only sets how passes step through it)
    return make_source(first, batch_size), X, first


def check_weights_kind(sample_weight: Any) -> bool:
    """Whether ``sample_weight`` is ``'chunks'`` (weights carried by the batches); refuse any other string."""
    if isinstance(sample_weight, str):
        if sample_weight != CHUNK_WEIGHTS:
            raise ValueError(
                f"sample_weight must be an array with one weight per row, or {CHUNK_WEIGHTS!r} for weights carried "
                f"by the batches of a chunked X; got {sample_weight!r}."
            )
        return True
    return False


def scanned(X: Tensor, dtype: torch.dtype | None = None) -> ScannedData:
    """An in-memory tensor scanned on its own device (one process), computing in ``dtype`` (default: X's)."""
    return scan(TensorSource(X), device=X.device, dtype=dtype or X.dtype, collective=False)
