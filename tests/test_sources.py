"""Data sources: fitting from chunks (lists, DataLoaders, Datasets, memmaps, array-likes) is exact.

Covers, against the same fit on one in-memory array: chunked EM from the same initial parameters for every
source kind and covariance type; initialisation that does not depend on the chunking; outputs that follow the
input kind; float32 accuracy over hundreds of chunks of data with a large offset; a clear ``ValueError`` for
every bad chunked input (and nothing half-fitted); ``uniform_hash``; and ``MemmapSource`` reading the file
(not the mapping) at any header offset.

Also the regressions of bugs these tests first found: an array-like with only ``__len__`` and slicing is read in
chunks, a row slice of a memmap and a copy-on-write memmap fit their own values, an empty list says it is empty.
"""

from __future__ import annotations

import functools
import gc
import re
import warnings
import weakref

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, FITTED_ATTRIBUTES, make_blobs
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from torchgmm import ConvergenceWarning, GaussianMixture
from torchgmm.data import ArraySource, IterableSource, MemmapSource, make_source, scan, uniform_hash
from torchgmm.kernels import FLUSH_ROWS

K = 3
N_CHUNK = 97  # uneven: 300 rows are 97 + 97 + 97 + 9


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Every product here is tiny: with two OpenMP threads on a busy two-core machine each one can wait
    # milliseconds at a barrier (measured: 250 s instead of 9 s for this file) without changing any result.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def _blobs() -> np.ndarray:
    X, _ = make_blobs(100, 3, K, 3.0, seed=1)  # (300, 3) float64
    return X


class SliceOnly:
    """An array-like with only ``__len__`` and ``__getitem__(slice)`` (as an on-disk array would be)."""

    def __init__(self, array):
        self.array = array
        self.reads = []

    def __len__(self):
        return len(self.array)

    def __getitem__(self, key):
        if not isinstance(key, slice):
            raise TypeError(f"SliceOnly supports only slices, got {key!r}")
        self.reads.append((key.start, key.stop))
        return self.array[key]


_NUMPY_OUT = ("array", "numpy_chunks", "memmap", "slice_only")
_TENSOR_OUT = ("tensor_chunks", "dataloader", "dataset")


def _source(kind: str, X: np.ndarray, tmp_path):
    """``X`` (float64, in memory) as the data source ``kind``."""
    t = torch.as_tensor(X)
    if kind == "array":
        return X
    if kind == "numpy_chunks":
        return [X[i : i + N_CHUNK] for i in range(0, len(X), N_CHUNK)]
    if kind == "tensor_chunks":
        return list(torch.split(t, N_CHUNK))
    if kind == "dataloader":
        return DataLoader(TensorDataset(t), batch_size=128)
    if kind == "dataset":
        return TensorDataset(t)
    if kind == "memmap":
        path = tmp_path / "X.npy"
        np.save(path, X)
        return np.load(path, mmap_mode="r")
    if kind == "slice_only":
        return SliceOnly(X)
    raise AssertionError(kind)


_SOURCES = [
    *(k for k in _NUMPY_OUT if k != "slice_only"),
    *_TENSOR_OUT,
    "slice_only",
]


def _numpy(a):
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


@functools.cache
def _reference(covariance_type: str):
    """``(kwargs, fit)``: explicit initial parameters from a short first fit, and the unchunked in-memory fit."""
    X = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = GaussianMixture(K, covariance_type=covariance_type, random_state=0, max_iter=2).fit(X)
        kwargs = dict(
            n_components=K,
            covariance_type=covariance_type,
            tol=1e-10,
            max_iter=50,
            weights_init=first.weights_,
            means_init=first.means_,
            precisions_init=first.precisions_,
        )
        return kwargs, GaussianMixture(**kwargs).fit(X)


def _assert_same_fit(fit, ref, rtol=1e-6):
    assert fit.n_iter_ == ref.n_iter_
    assert fit.converged_ == ref.converged_
    np.testing.assert_allclose(fit.lower_bounds_, ref.lower_bounds_, rtol=rtol)
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        np.testing.assert_allclose(_numpy(getattr(fit, name)), getattr(ref, name), rtol=rtol, atol=1e-12, err_msg=name)


# ------------------------------------------------------------------------------------- 1. chunked EM is exact


@pytest.mark.filterwarnings("ignore::torchgmm.ConvergenceWarning")
@pytest.mark.parametrize("kind", _SOURCES)
@pytest.mark.parametrize("batch_size", [7, 50])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunked_fit_equals_in_memory_fit(covariance_type, batch_size, kind, tmp_path):
    kwargs, ref = _reference(covariance_type)
    assert ref.n_iter_ >= 5  # several iterations, so differences would compound
    fit = GaussianMixture(**kwargs, batch_size=batch_size).fit(_source(kind, _blobs(), tmp_path))
    _assert_same_fit(fit, ref)


def test_in_memory_batch_size_does_not_change_the_fit():
    kwargs, ref = _reference("full")
    for batch_size in (1, 299, 300, 10_000):
        _assert_same_fit(GaussianMixture(**kwargs, batch_size=batch_size).fit(_blobs()), ref)


def test_array_source_reads_every_row_once_per_pass():
    X = _blobs()
    array_like = SliceOnly(X)
    source = make_source(array_like)
    assert isinstance(source, ArraySource)
    data = scan(source, dtype=torch.float64, collective=False)
    array_like.reads.clear()
    got = torch.cat([x for _, x in data.chunks(64)]) + data.shift
    np.testing.assert_allclose(got.numpy(), X, rtol=1e-12, atol=1e-12)
    assert array_like.reads == [(i, i + 64) for i in range(0, 300, 64)]


# ------------------------------------------------------------------- 2. initialisation ignores the chunking


@pytest.mark.filterwarnings("ignore::torchgmm.ConvergenceWarning")
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_initialisation_does_not_depend_on_chunking(init_params):
    X, _ = make_blobs(150, 3, 4, 3.0, seed=5)  # 600 rows
    chunks = [X[:257], X[257:]]
    kwargs = dict(n_components=4, init_params=init_params, random_state=3)
    # max_iter=0 keeps the initial parameters themselves
    a = GaussianMixture(**kwargs, max_iter=0, batch_size=100).fit(X)
    b = GaussianMixture(**kwargs, max_iter=0, batch_size=333).fit(chunks)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(b.weights_, a.weights_, rtol=1e-8, atol=1e-8)
    # and the fits of all restarts from there
    a = GaussianMixture(**kwargs, n_init=3, tol=1e-8, max_iter=30, batch_size=100).fit(X)
    b = GaussianMixture(**kwargs, n_init=3, tol=1e-8, max_iter=30, batch_size=333).fit(chunks)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(b.init_lower_bounds_, a.init_lower_bounds_, rtol=1e-8)
    assert b.n_iter_ == a.n_iter_
    # the comparison has teeth: another seed gives other initial means
    c = GaussianMixture(4, init_params=init_params, random_state=4, max_iter=0, batch_size=333).fit(chunks)
    assert np.abs(c.means_ - b.means_).max() > 1e-3


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data"])
def test_seeding_sample_of_large_data_does_not_depend_on_chunking(init_params):
    # 200k rows: more than the seeding sample keeps (2**17 rows), so the sample is merged across chunks by
    # hashed keys; the in-memory fit reads 65536-row chunks, the chunked one 4096-row pieces of uneven chunks.
    X, _ = _offset_data()
    chunks = [X[:50_000], X[50_000:120_001], X[120_001:]]
    kwargs = dict(n_components=3, init_params=init_params, random_state=11, max_iter=0)
    a = GaussianMixture(**kwargs).fit(X)
    b = GaussianMixture(**kwargs, batch_size=4096).fit(chunks)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-8)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------------- 3. outputs follow the input kind


@pytest.mark.filterwarnings("ignore::torchgmm.ConvergenceWarning")
@pytest.mark.parametrize("kind", [k for k in _SOURCES if k != "array"])
def test_outputs_follow_input_and_inference_accepts_chunks(kind, tmp_path):
    X = _blobs()
    kwargs, ref = _reference("full")
    source = _source(kind, X, tmp_path)
    gm = GaussianMixture(**kwargs, batch_size=50)
    labels = gm.fit_predict(source)

    expected = torch.Tensor if kind in _TENSOR_OUT else np.ndarray
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        value = getattr(gm, name)
        assert isinstance(value, expected), name
        assert value.dtype in (np.float64, torch.float64), name
    assert isinstance(labels, expected)
    assert labels.shape == (len(X),)
    assert labels.dtype in (np.int64, torch.int64)

    predicted = gm.predict(source)
    assert isinstance(predicted, expected)
    np.testing.assert_array_equal(_numpy(labels), _numpy(predicted))
    np.testing.assert_array_equal(_numpy(predicted), ref.predict(X))

    proba = gm.predict_proba(source)
    assert isinstance(proba, expected)
    np.testing.assert_allclose(_numpy(proba), ref.predict_proba(X), rtol=1e-8, atol=1e-12)
    score_samples = gm.score_samples(source)
    assert isinstance(score_samples, expected)
    np.testing.assert_allclose(_numpy(score_samples), ref.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(gm.score(source), ref.score(X), rtol=1e-10)
    np.testing.assert_allclose(gm.bic(source), ref.bic(X), rtol=1e-10)
    np.testing.assert_allclose(gm.aic(source), ref.aic(X), rtol=1e-10)


def test_inference_output_follows_the_inference_input():
    X = _blobs()
    _, ref = _reference("full")  # fitted on NumPy
    t = torch.as_tensor(X)
    for source in (list(torch.split(t, N_CHUNK)), DataLoader(TensorDataset(t), batch_size=64)):
        labels = ref.predict(source)
        assert isinstance(labels, torch.Tensor)
        np.testing.assert_array_equal(labels.numpy(), ref.predict(X))
    labels = ref.predict([X[:10], X[10:]])
    assert isinstance(labels, np.ndarray)
    np.testing.assert_array_equal(labels, ref.predict(X))


def test_dataloader_of_features_and_labels_uses_the_features():
    X = _blobs()
    kwargs, ref = _reference("diag")
    t = torch.as_tensor(X)
    loader = DataLoader(TensorDataset(t, torch.arange(len(X))), batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = GaussianMixture(**kwargs).fit(loader)
    _assert_same_fit(fit, ref)
    assert fit.predict(loader).shape == (len(X),)


# ------------------------------------------------------------------- 4. float32 streaming keeps its accuracy


@functools.lru_cache(maxsize=1)
def _offset_data():
    """200k rows, D=2: two unit-spread clusters around 1e4, as four float64 chunks."""
    rng = np.random.default_rng(7)
    n = 200_000
    X = rng.normal(size=(n, 2))
    X[rng.random(n) < 0.4] += [3.0, -2.0]
    X += 1e4
    return X, [X[i : i + 50_000] for i in range(0, n, 50_000)]


@pytest.mark.filterwarnings("ignore::torchgmm.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_streaming_with_large_offset(covariance_type, working_dtypes):
    X, chunks = _offset_data()
    assert len(X) > 3 * FLUSH_ROWS  # several float64 flushes per pass
    first = GaussianMixture(2, covariance_type=covariance_type, random_state=0, tol=1e-6).fit(X)
    kwargs = dict(
        n_components=2,
        covariance_type=covariance_type,
        tol=0.0,
        max_iter=3,
        weights_init=first.weights_,
        means_init=first.means_,
        precisions_init=first.precisions_,
    )
    ref = GaussianMixture(**kwargs).fit(X)
    batch_size = 512  # 98 chunks of each 50k-row list chunk: ~400 chunks per pass
    working_dtypes.clear()
    fit = GaussianMixture(**kwargs, dtype="float32", batch_size=batch_size).fit(chunks)
    assert fit.means_.dtype == np.float32
    assert fit.n_iter_ == ref.n_iter_ == 3
    # Every pass really ran in float32: on uncentred data the folded densities would round by eps32 * 1e8 nats
    # and each pass would fall back to float64, which is accurate and would hide the loss.
    assert working_dtypes == [torch.float32] * 3
    # Means are stored in float32: near 1e4 its spacing is 2**-10 ~ 1e-3, so rounding alone moves them by up
    # to 5e-4 (5e-8 relative); 1e-6 relative leaves room for that and nothing like an uncentred float32 sum.
    np.testing.assert_allclose(fit.means_, ref.means_, rtol=1e-6)
    # Covariances (~1) are sums over 65536-row float32 partials: without centring on the data mean (and the
    # float64 fallback) the x**2 ~ 1e8 terms would leave no correct digit. Relative to the covariance scale, as
    # the off-diagonal terms of these nearly uncorrelated features are ~0 and have no relative accuracy of their own.
    scale = np.abs(ref.covariances_).max()
    np.testing.assert_allclose(fit.covariances_, ref.covariances_, rtol=1e-3, atol=1e-3 * scale)
    np.testing.assert_allclose(fit.weights_, ref.weights_, rtol=1e-4)
    np.testing.assert_allclose(fit.lower_bounds_, ref.lower_bounds_, rtol=1e-5)


# ------------------------------------------------------------------------------------- 5. bad chunked input


def _assert_unfitted(gm):
    present = [name for name in FITTED_ATTRIBUTES if hasattr(gm, name)]
    present += [name for name in vars(gm) if name.endswith("_") and not name.startswith("_")]
    assert present == [], f"attributes left after a failed fit: {present}"


class ChangesBetweenPasses:
    """Re-iterable chunks whose every second pass leaves out the last chunk."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        return iter(self.chunks if self.passes % 2 else self.chunks[:-1])


def _with_bad(X, row, value):
    bad = X[50:90].copy()
    bad[row, 1] = value
    return [X[:50], bad, X[90:]]


def _bad_sources():
    X = _blobs()
    t = torch.as_tensor(X)
    nan_row = re.escape("chunk 1, row 7 of the chunk (row 57 of X), column 1")
    return [
        ("list_iterator", iter([X[:50], X[50:]]), "can be read only once"),
        ("generator", (c for c in [X[:50], X[50:]]), "can be read only once"),
        ("width", [X[:50], X[50:, :2]], "Chunk 1 of X has 2 columns, but earlier chunks have 3"),
        ("width_tensor", [t[:50], t[50:, :2]], "Chunk 1 of X has 2 columns, but earlier chunks have 3"),
        ("nan", _with_bad(X, 7, np.nan), nan_row),
        ("inf", _with_bad(X, 7, np.inf), nan_row),
        ("-inf_tensor", [torch.as_tensor(c) for c in _with_bad(X, 7, -np.inf)], nan_row),
        (
            "nan_dataloader",
            DataLoader(TensorDataset(torch.as_tensor(_with_bad(X, 7, np.nan)[1])), batch_size=5),
            re.escape("chunk 1, row 2 of the chunk (row 7 of X), column 1"),
        ),
        ("empty_chunk", [np.empty((0, 3))], "X is empty"),
        ("empty_chunks", [torch.empty(0, 3), torch.empty(0, 3)], "X is empty"),
        ("empty_dataloader", DataLoader(TensorDataset(torch.empty(0, 3)), batch_size=8), "X is empty"),
        ("changes", ChangesBetweenPasses([X[:100], X[100:200], X[200:]]), "in its first pass but"),
        ("3d_chunk", [X[:10], np.zeros((4, 3, 2))], re.escape("Chunk 1 of X has shape (4, 3, 2); chunks must be 2-D")),
        ("3d_batches", DataLoader(TensorDataset(torch.zeros(10, 3, 2)), batch_size=4), "chunks must be 2-D"),
        ("strings", [X[:10], np.array([["a", "b", "c"]])], "Chunk 1 of X: chunks must contain numbers"),
        ("complex", [X[:10], np.ones((2, 3), dtype=complex)], "Chunk 1 of X: Complex data not supported"),
        ("complex_tensor", [t[:10], torch.ones(2, 3, dtype=torch.complex128)], "Complex data not supported"),
    ]


@pytest.mark.parametrize("name", [case[0] for case in _bad_sources()])
def test_bad_chunked_source_fails_clearly(name):
    _, source, match = next(case for case in _bad_sources() if case[0] == name)
    gm = GaussianMixture(2, covariance_type="diag", random_state=0, batch_size=16)
    with pytest.raises(ValueError, match=match):
        gm.fit(source)
    _assert_unfitted(gm)


def test_non_finite_row_in_array_source_counts_rows_over_reads(tmp_path):
    # MemmapSource and ArraySource scan in reads of 65536 rows: the row named is the row of X.
    X = np.zeros((70_001, 2))
    X[:, 0] = np.arange(len(X)) % 7
    X[70_000, 1] = np.nan
    np.save(tmp_path / "nan.npy", X)
    gm = GaussianMixture(2, covariance_type="spherical", random_state=0)
    with pytest.raises(ValueError, match=re.escape("NaN (first at row 70000, column 1)")):
        gm.fit(np.load(tmp_path / "nan.npy", mmap_mode="r"))
    _assert_unfitted(gm)


def test_empty_list_fails():
    gm = GaussianMixture(2)
    with pytest.raises(ValueError):
        gm.fit([])
    _assert_unfitted(gm)


def test_empty_list_says_empty():
    with pytest.raises(ValueError, match="is empty"):
        GaussianMixture(2).fit([])


def test_changing_source_fails_at_inference_too():
    X = _blobs()
    _, ref = _reference("full")
    before = ref.means_.copy()
    with pytest.raises(ValueError, match=r"gave \d+ rows in its first pass but \d+ in a later one"):
        ref.predict(ChangesBetweenPasses([X[:100], X[100:291], X[291:]]))
    np.testing.assert_allclose(ref.means_, before, rtol=1e-15)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "bic"])
def test_inference_on_chunks_with_wrong_number_of_features(method):
    X = _blobs()
    _, ref = _reference("full")
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3 features"):
        getattr(ref, method)([X[:10, :2], X[10:20, :2]])
    with pytest.raises(ValueError, match="has 2 columns, but earlier chunks have 3"):
        getattr(ref, method)([X[:10], X[10:20, :2]])


@pytest.mark.parametrize(
    ("batch_size", "exc", "match"),
    [
        (0, ValueError, "'batch_size' must be >= 1"),
        (-3, ValueError, "'batch_size' must be >= 1"),
        (1.5, TypeError, "'batch_size' must be of type int"),
        (True, TypeError, "'batch_size' must be of type int"),
    ],
)
@pytest.mark.parametrize("chunked", [False, True])
def test_bad_batch_size(batch_size, exc, match, chunked):
    X = _blobs()
    gm = GaussianMixture(2, batch_size=batch_size)
    with pytest.raises(exc, match=match):
        gm.fit([X[:100], X[100:]] if chunked else X)
    _assert_unfitted(gm)


def test_make_source_kinds(tmp_path):
    X = _blobs()
    assert isinstance(make_source(torch.as_tensor(X)).X, torch.Tensor)
    assert isinstance(make_source(X), ArraySource)
    assert isinstance(make_source(_source("memmap", X, tmp_path)), MemmapSource)
    for kind in ("numpy_chunks", "tensor_chunks", "dataloader", "dataset"):
        assert isinstance(make_source(_source(kind, X, tmp_path)), IterableSource), kind
    assert isinstance(make_source(SliceOnly(X)), ArraySource)
    with pytest.raises(ValueError, match="can be read only once"):
        make_source(iter([X]))


# ---------------------------------------------------------------------------------------- 6. uniform_hash


def test_uniform_hash_range_dtype_determinism():
    index = torch.arange(100_000)
    values = uniform_hash(12345, index)
    assert values.dtype == torch.float64
    assert values.shape == index.shape
    assert bool((values > 0).all()) and bool((values < 1).all())
    # an exact function of integers: the same bits every time
    assert torch.equal(values, uniform_hash(12345, index.clone()))
    # almost no collisions among 100k values of 32 bits (about 1.2 expected)
    assert values.unique().numel() > 100_000 - 20


@pytest.mark.parametrize(("seed", "offset"), [(0, 0), (12345, 0), (2**62 - 1, 0), (7, 2**40)])
def test_uniform_hash_is_uniform(seed, offset):
    values = uniform_hash(seed, torch.arange(100_000) + offset).numpy()
    assert abs(values.mean() - 0.5) < 0.01
    assert stats.kstest(values, "uniform").pvalue > 1e-3
    # neighbouring indices are not correlated
    assert abs(np.corrcoef(values[:-1], values[1:])[0, 1]) < 0.02


def test_uniform_hash_seeds_differ():
    index = torch.arange(100_000)
    # 2**32 has the low 32 bits of seed 0: the high half of the seed must count too
    draws = [uniform_hash(seed, index).numpy() for seed in (0, 1, 2**32, 2**33 + 1)]
    for i in range(len(draws)):
        for j in range(i):
            assert np.mean(np.isclose(draws[i], draws[j], rtol=0, atol=1e-12)) < 1e-3
            assert abs(np.corrcoef(draws[i], draws[j])[0, 1]) < 0.02


def test_uniform_hash_ignores_how_the_index_is_split():
    index = torch.arange(2**33, 2**33 + 10_000)
    whole = uniform_hash(99, index)
    pieces = torch.cat([uniform_hash(99, part) for part in torch.split(index, [1, 4095, 3333, 2571])])
    assert torch.equal(pieces, whole)
    assert torch.equal(uniform_hash(99, index.view(100, 100)), whole.view(100, 100))
    perm = torch.randperm(index.numel(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(uniform_hash(99, index[perm]), whole[perm])


# -------------------------------------------------------------------------------------------- 7. memmaps


def _read_all(source, rows=64):
    data = scan(source, dtype=torch.float64, collective=False)
    return (torch.cat([x for _, x in data.chunks(rows)]) + data.shift).numpy()


def test_memmap_source_reads_the_file_not_the_mapping(tmp_path):
    X = _blobs()
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert mm.offset > 0  # the .npy header
    source = make_source(mm)
    assert isinstance(source, MemmapSource)
    mapping = weakref.ref(mm)
    del mm
    gc.collect()
    assert mapping() is None  # the source keeps no reference to the mapping ...
    np.testing.assert_allclose(_read_all(source), X, rtol=1e-12, atol=1e-12)  # ... and reads all rows


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16])
@pytest.mark.parametrize("offset", [128, 13])
def test_memmap_with_raw_header_offset(tmp_path, offset, dtype):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(301, 3)) * 10
    X[:150] += 100.0  # two clusters
    X = X.astype(dtype)  # 301 rows: the last read is short
    path = tmp_path / "raw.bin"
    with open(path, "wb") as f:
        f.write(bytes(range(offset)))  # junk before the data
        f.write(X.tobytes())
    mm = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=X.shape)
    np.testing.assert_array_equal(np.asarray(mm), X)  # the file is what we think it is
    source = make_source(mm)
    assert isinstance(source, MemmapSource)
    np.testing.assert_allclose(_read_all(source), X.astype(np.float64), rtol=1e-12, atol=1e-10)

    kwargs = dict(n_components=2, covariance_type="diag", random_state=0, tol=1e-8, dtype="float64")
    a = GaussianMixture(**kwargs, batch_size=50).fit(mm)
    b = GaussianMixture(**kwargs).fit(np.array(X, dtype=np.float64))
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-8)


def test_memmap_row_slice_fits_its_own_rows(tmp_path):
    X = _blobs()
    np.save(tmp_path / "X.npy", X)
    part = np.load(tmp_path / "X.npy", mmap_mode="r")[100:]
    kwargs = dict(n_components=1, covariance_type="diag")
    np.testing.assert_allclose(
        GaussianMixture(**kwargs).fit(part).means_, GaussianMixture(**kwargs).fit(X[100:]).means_, rtol=1e-8
    )


def test_copy_on_write_memmap_fits_its_current_values(tmp_path):
    X = _blobs()
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="c")
    mm[:, 0] += 100.0  # private to this mapping
    kwargs = dict(n_components=1, covariance_type="diag")
    np.testing.assert_allclose(
        GaussianMixture(**kwargs).fit(mm).means_, GaussianMixture(**kwargs).fit(np.array(mm)).means_, rtol=1e-8
    )
