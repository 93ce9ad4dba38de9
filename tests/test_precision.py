"""Float32 passes keep float64-like accuracy: centred data, float64 flushes of partial sums, float32 kept where safe.

Three mechanisms, each against a float64 reference computed from the same data and parameters:

* every source serves its rows centred on the data mean (``DataSource.shift``), so float32 products of data
  offset by 1e4 keep their digits;
* an E-step adds chunk statistics into float32 buffers that are flushed into float64 every
  ``torchgmm.kernels.FLUSH_ROWS`` rows, so a pass over millions of rows in small chunks does not lose digits to
  float32 running sums;
* a float32 pass on offset data really computes in float32 (``working_dtype`` does not fall back to float64,
  which would hide a loss of precision behind a slower pass).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES

import torchgmm.kernels
import torchgmm.passes
from torchgmm import ConvergenceWarning, GaussianMixture
from torchgmm.covariance import get_covariance_type
from torchgmm.data import make_source, scan, scanned
from torchgmm.em import MixtureParameters
from torchgmm.passes import e_step


@functools.lru_cache(maxsize=1)
def _offset_data() -> np.ndarray:
    """20k rows, D=3, two overlapping clusters far from the origin (around 1e4), float64."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20_000, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 0.5]])
    X[rng.random(len(X)) < 0.35] += [2.5, -1.5, 1.0]
    return X + 1e4


# ------------------------------------------------------------------------------------------------- centring


@pytest.mark.parametrize("kind", ["tensor", "array", "chunks", "memmap"])
def test_sources_serve_rows_centred_on_the_data_mean(kind, tmp_path):
    X = _offset_data()
    if kind == "tensor":
        source = make_source(torch.as_tensor(X))
    elif kind == "array":
        source = make_source(X)
    elif kind == "chunks":
        source = make_source([X[i : i + 3001] for i in range(0, len(X), 3001)])
    else:
        np.save(tmp_path / "X.npy", X)
        source = make_source(np.load(tmp_path / "X.npy", mmap_mode="r"))
    data = scan(source, dtype=torch.float64, collective=False)
    np.testing.assert_allclose(data.shift.numpy(), X.mean(0), rtol=1e-13)
    rows = torch.cat([x for _, x in data.chunks(1000)]).numpy()
    np.testing.assert_allclose(rows.mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(rows + data.shift.numpy(), X, rtol=1e-15, atol=0)


def test_float32_chunks_are_centred_before_the_cast():
    """Centred in float64, then cast: float32 rows keep ~7 digits of the spread, not of the 1e4 offset."""
    X = _offset_data()
    data = scan(make_source(X), dtype=torch.float32, collective=False)  # float64 storage, float32 compute
    rows = torch.cat([x for _, x in data.chunks(4096)])
    assert rows.dtype == torch.float32
    exact = X - X.mean(0)
    # float32 rounding of values of order 1: 6e-8 relative; an uncentred cast would be off by ~1e-3 absolute
    np.testing.assert_allclose(rows.numpy(), exact, rtol=0, atol=4e-7 * np.abs(exact).max())


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_fit_on_offset_data_computes_in_float32(covariance_type, working_dtypes):
    """Data around 1e4 with unit spread: every pass stays in float32 and matches the float64 fit.

    Uncentred, the folded float32 densities would carry about eps32 * 1e8 = 6 nats of rounding, so every pass
    would have to fall back to float64 (and any that did not would be wrong by nats).
    """
    X = _offset_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = GaussianMixture(2, covariance_type=covariance_type, random_state=0, max_iter=5, tol=0.0).fit(X)
        working_dtypes.clear()
        init = dict(weights_init=ref.weights_, means_init=ref.means_, precisions_init=ref.precisions_)
        kwargs = dict(covariance_type=covariance_type, max_iter=4, tol=0.0, **init)
        ref = GaussianMixture(2, **kwargs).fit(X)
        working_dtypes.clear()
        fit = GaussianMixture(2, dtype="float32", **kwargs).fit(X)
        scores = fit.score_samples(X)
    assert working_dtypes == [torch.float32] * 5  # four E-steps and the scoring pass
    assert fit.means_.dtype == np.float32 and scores.dtype == np.float32
    np.testing.assert_allclose(fit.lower_bounds_, ref.lower_bounds_, rtol=2e-6)
    np.testing.assert_allclose(fit.means_, ref.means_, rtol=1e-7)  # float32 spacing near 1e4 is 6e-8 relative
    # Measured: 2e-5 relative (full, tied) and 2.2e-4 (diag, spherical, whose moments of the 20k rows are summed
    # by one float32 product); uncentred float32 arithmetic would leave no correct digit.
    scale = np.abs(ref.covariances_).max()
    np.testing.assert_allclose(fit.covariances_, ref.covariances_, rtol=5e-4, atol=5e-4 * scale)
    # means_ near 1e4 are stored in float32 (spacing 1e-3), which alone moves densities by a few 1e-3 nats
    np.testing.assert_allclose(scores, ref.score_samples(X), rtol=0, atol=1e-2)


# -------------------------------------------------------------------------------------- float64 flushes


def _parameters(covariance_type: str) -> MixtureParameters:
    """Two overlapping components in 2-D (float64), one restart."""
    covariance = get_covariance_type(covariance_type)
    shape = covariance.engine_shape(2, 2)
    if covariance.triangular:
        covariances = torch.tensor([[1.3, 0.4], [0.4, 0.9]], dtype=torch.float64).expand(1, *shape).clone()
    else:
        covariances = torch.full((1, *shape), 1.3, dtype=torch.float64)
    precisions_cholesky, ok = covariance.factorise(covariances)
    assert bool(ok.all())
    means = torch.tensor([[[0.5, -0.3], [-1.0, 0.6]]], dtype=torch.float64)
    return MixtureParameters(torch.tensor([[0.4, 0.6]], dtype=torch.float64), means, covariances, precisions_cholesky)


@functools.lru_cache(maxsize=1)
def _many_rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1 << 21, 2))
    X[: len(X) // 3] += [2.0, -1.0]
    return X


# Largest relative error of each statistic (log-likelihood, nk, s1, s2) of a float32 pass over 2**21 rows in
# 4096-row chunks against float64. Measured with the flush every 65536 rows: full s2 7e-6, tied s2 1.7e-5, all
# others below 3e-7; with the flush disabled, full s2 5e-3 and tied 1e-2 (the scatter is added into one float32
# buffer that reaches millions, so every chunk's contribution loses most of its digits), diag and spherical s1 1e-6.
TOLERANCES = {"full": 1e-4, "tied": 1e-4, "diag": 2e-6, "spherical": 2e-6}


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_pass_over_millions_of_rows_keeps_float64_accuracy(covariance_type):
    X = _many_rows()
    covariance = get_covariance_type(covariance_type)
    params = _parameters(covariance_type)
    assert len(X) >= 32 * torchgmm.kernels.FLUSH_ROWS  # many flushes, each of many chunks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny products: threads would only wait at barriers
    try:
        ref = e_step(scanned(torch.from_numpy(X)), params, covariance, rows=4096)
        data = scanned(torch.from_numpy(X.astype(np.float32)))
        got = e_step(data, params.map(lambda t: t.to(torch.float32)), covariance, rows=4096)
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(ref._fields, got, ref, strict=True):
        assert a.dtype == torch.float64, name  # the statistics themselves are float64
        error = float((a - b).abs().max() / b.abs().max())
        assert error < TOLERANCES[covariance_type] if name != "log_likelihood" else error < 1e-6, (name, error)
