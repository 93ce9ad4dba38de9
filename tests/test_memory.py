"""Working memory of the passes over the data: bounded by the chunk size, never by the number of rows.

How chunk sizes are chosen (:func:`torchgmm.em.chunk_rows`), and what a pass really allocates: every tensor an
operation creates is recorded (a ``TorchDispatchMode`` that sees each aten call; outputs that share storage
with an input, views and ``out=`` results, allocate nothing new), through an E-step, a whole fit
(initialisation included) and scoring, on sources far larger than one chunk. The largest temporary must be the
same for N and several times N rows and within the chunk budget, so no ``[R, N, K]`` matrix of the whole data
ever exists. On CUDA the allocator's own peak is checked the same way.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, requires_cuda
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import torchgmm.data
from torchgmm import ConvergenceWarning, GaussianMixture
from torchgmm.covariance import get_covariance_type
from torchgmm.data import scanned
from torchgmm.em import MixtureParameters
from torchgmm.kernels import kernel_for
from torchgmm.passes import chunk_rows, e_step

CPU_BUDGET = 1 << 20  # elements per chunk temporary on CPU (chunk_rows' docstring)


class LargestAllocation(TorchDispatchMode):
    """Records the largest tensor any aten operation allocates while active.

    Attributes
    ----------
    nbytes : int
        Size of the largest new storage.
    where : str
        The operation and shape that made it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nbytes, self.where = 0, ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and t.layout == torch.strided
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                storage = t.untyped_storage()
                if storage.data_ptr() not in inputs and storage.nbytes() > self.nbytes:
                    self.nbytes, self.where = storage.nbytes(), f"{func} -> {tuple(t.shape)} {t.dtype}"
        return out


# ------------------------------------------------------------------------------------------ how chunks are sized


def test_chunk_rows_fills_the_cpu_budget():
    cpu = torch.device("cpu")
    assert chunk_rows(10**7, 64, cpu) == CPU_BUDGET // 64
    assert chunk_rows(10**7, 3, cpu) == CPU_BUDGET // 3
    assert chunk_rows(1000, 64, cpu) == 1000  # never more rows than there are
    assert chunk_rows(10**7, 10**9, cpu) == 16  # a huge row still gets a few rows per chunk
    assert chunk_rows(10**7, 64, cpu, rows=5000) == 5000  # batch_size wins
    assert chunk_rows(300, 64, cpu, rows=5000) == 300
    assert chunk_rows(0, 64, cpu) == 1


def test_chunk_rows_on_cuda_takes_a_sixteenth_of_free_memory(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 << 30))
    free = 1 << 30  # 1 GiB free: a sixteenth is 2**24 float32 elements
    assert chunk_rows(10**9, 256, cuda) == (1 << 24) // 256
    free = 1 << 40  # plenty free: capped at 2**28 elements
    assert chunk_rows(10**9, 256, cuda) == (1 << 28) // 256
    assert chunk_rows(10**9, 256, cuda, rows=100) == 100


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_elements_per_row_covers_the_largest_e_step_temporary(covariance_type):
    """The per-row size chunks are planned with is at least what one row of an E-step really allocates."""
    R, K, D, n = 2, 8, 8, 4096
    covariance = get_covariance_type(covariance_type)
    data, params = _problem(covariance_type, n, R, K, D)
    with LargestAllocation() as seen:
        e_step(data, params, covariance, rows=n)
    per_row = seen.nbytes / n / 4  # float32 elements
    assert per_row <= kernel_for(covariance).elements_per_row(R, K, D), seen.where


# ------------------------------------------------------------------------- temporaries do not grow with the data


def _problem(covariance_type: str, n_samples: int, R: int, K: int, D: int, seed: int = 0):
    """A scanned float32 source of ``n_samples`` rows (split into chunks as asked) and parameters of R restarts."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, D)).astype(np.float32)
    X[: n_samples // 2] += 3.0
    data = scanned(torch.from_numpy(X))
    covariance = get_covariance_type(covariance_type)
    means = torch.as_tensor(rng.normal(size=(R, K, D)), dtype=torch.float32)
    shape = covariance.engine_shape(K, D)
    if covariance.triangular:
        covariances = torch.eye(D).expand(R, *shape).clone() * 1.5
    else:
        covariances = torch.full((R, *shape), 1.5)
    precisions_cholesky, ok = covariance.factorise(covariances)
    assert bool(ok.all())
    weights = torch.full((R, K), 1.0 / K)
    return data, MixtureParameters(weights, means, covariances, precisions_cholesky)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_e_step_temporaries_do_not_grow_with_the_data(covariance_type):
    R, K, D = 2, 8, 8
    covariance = get_covariance_type(covariance_type)
    planned = chunk_rows(10**9, kernel_for(covariance).elements_per_row(R, K, D), torch.device("cpu"))
    largest = {}
    for n_samples in (4 * planned, 32 * planned):
        data, params = _problem(covariance_type, n_samples, R, K, D)
        with LargestAllocation() as seen:
            e_step(data, params, covariance)
        largest[n_samples] = seen.nbytes, seen.where
    (small, where_small), (large, where_large) = largest.values()
    assert large == small, (where_small, where_large)
    # within the budget of one chunk (float32 elements), far below one [R, N, K] matrix of the data
    assert large <= 4 * CPU_BUDGET, where_large
    assert large <= 4 * R * K * 32 * planned / 4, where_large  # a quarter of one float32 [R, N, K]


@pytest.mark.filterwarnings("ignore::torchgmm.ConvergenceWarning")
@pytest.mark.parametrize("init_params", ["kmeans", "random"])
def test_fit_and_score_temporaries_do_not_grow_with_the_data(init_params, tmp_path):
    """A whole fit (seeding, Lloyd, initial statistics, EM) and scoring, streamed from a memmap of N and 2N rows.

    Both sizes exceed the seeding sample (2**17 rows), the only pass whose memory grows with N below that.
    """
    largest = {}
    for n_samples in (1 << 18, 1 << 19):
        rng = np.random.default_rng(1)
        X = np.lib.format.open_memmap(tmp_path / f"X{n_samples}.npy", "w+", np.float32, (n_samples, 4))
        X[:] = rng.normal(size=(n_samples, 4))
        X[: n_samples // 3] += 4.0
        X.flush()
        X = np.load(tmp_path / f"X{n_samples}.npy", mmap_mode="r")
        gm = GaussianMixture(4, n_init=2, init_params=init_params, max_iter=2, tol=0.0, random_state=0)
        with LargestAllocation() as seen, warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(X)
            gm.score(X)
        assert gm.n_iter_ == 2
        largest[n_samples] = seen.nbytes, seen.where
    (small, where_small), (large, where_large) = largest.values()
    assert large <= small * 1.01, (where_small, where_large)
    # the chunk budget, in float64 elements at most (the initial statistics are computed in float64): a quarter
    # of one float64 [R, N, K] matrix of the larger data
    assert large <= 8 * CPU_BUDGET, where_large
    assert 4 * large <= 8 * 2 * 4 * (1 << 19), where_large


@pytest.mark.filterwarnings("ignore::torchgmm.ConvergenceWarning")
def test_a_large_batch_size_reads_large_steps_but_keeps_the_tiles(tmp_path, monkeypatch):
    """batch_size=N reads a memmap in one step per pass, and no temporary outgrows the engine's tiles.

    Before tiles were decoupled from batch_size, this fit made [R, K, N, D] float32 temporaries (64 MiB here).
    """
    N, D, K, R = 1 << 16, 16, 8, 2
    rng = np.random.default_rng(2)
    X = np.lib.format.open_memmap(tmp_path / "X.npy", "w+", np.float32, (N, D))
    X[:] = rng.normal(size=(N, D))
    X[: N // 2] += 3.0
    X.flush()
    reads = []
    real_read = torchgmm.data.MemmapSource.read

    def read(source, rows):
        reads.append(rows)
        return real_read(source, rows)

    monkeypatch.setattr(torchgmm.data.MemmapSource, "read", read)
    largest = {}
    for batch_size in (None, N):
        reads.clear()
        gm = GaussianMixture(K, n_init=R, max_iter=1, tol=0.0, random_state=0, batch_size=batch_size)
        with LargestAllocation() as seen:
            gm.fit(np.load(tmp_path / "X.npy", mmap_mode="r"))
            gm.score(np.load(tmp_path / "X.npy", mmap_mode="r"))
        largest[batch_size] = seen.nbytes, seen.where
        if batch_size is not None:
            assert set(reads) <= {N, torchgmm.data._SCAN_ROWS, 1} and N in reads, set(reads)  # (1: peeks)
    (default, where_default), (large, where_large) = largest.values()
    assert large <= 8 * CPU_BUDGET, where_large  # a tile's budget, in float64 at most
    assert large <= 1.01 * default, (where_default, where_large)
    assert 8 * large <= 4 * R * K * N * D, where_large


@requires_cuda
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_cuda_peak_memory_does_not_grow_with_the_data(covariance_type):
    """Host chunks streamed to the GPU: the allocator's peak above the parameters is the same for N and 4N rows."""
    R, K, D = 2, 8, 8
    covariance = get_covariance_type(covariance_type)
    rows = 1 << 14
    device = torch.device("cuda", torch.cuda.current_device())
    peaks = []
    for n_samples in (4 * rows, 16 * rows):
        data, params = _problem(covariance_type, n_samples, R, K, D)
        data = dataclasses.replace(data, device=device)  # host rows, streamed to the GPU chunk by chunk
        params = params.map(lambda t: t.to(device))
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        e_step(data, params, covariance, rows=rows)
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated(device) - before)
    assert peaks[1] <= peaks[0] * 1.05 + (1 << 20), peaks
    assert peaks[1] < 16 * rows * R * K * 4, peaks  # less than one float32 [R, N, K] of the larger data
