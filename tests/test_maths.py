"""The EM maths against independent references (SciPy densities, scikit-learn M-step)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.special
import torch
from conftest import COVARIANCE_TYPES, make_blobs
from scipy.stats import multivariate_normal
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

from torchgmm import ConvergenceWarning, FailedRestartWarning, GaussianMixture
from torchgmm.covariance import get_covariance_type
from torchgmm.data import scanned
from torchgmm.em import (
    MixtureParameters,
    Statistics,
    estimate_log_gaussian_prob,
    estimate_log_prob_resp,
    solve_m_step,
    sufficient_statistics,
)
from torchgmm.passes import e_step, statistics_from_resp

R, K, D, N = 2, 3, 4, 60


def _random_covariances(covariance_type, rng):
    if covariance_type == "full":
        A = rng.normal(size=(R, K, D, D))
        return A @ np.swapaxes(A, -1, -2) + 0.5 * np.eye(D)
    if covariance_type == "tied":  # the engine keeps a component axis of one
        A = rng.normal(size=(R, 1, D, D))
        return A @ np.swapaxes(A, -1, -2) + 0.5 * np.eye(D)
    if covariance_type == "diag":
        return rng.uniform(0.3, 3.0, (R, K, D))
    return rng.uniform(0.3, 3.0, (R, K))


def _dense(cov, covariance_type, r, k):
    """One component's covariance as a dense D x D matrix."""
    if covariance_type == "full":
        return cov[r, k]
    if covariance_type == "tied":
        return cov[r, 0]
    if covariance_type == "diag":
        return np.diag(cov[r, k])
    return cov[r, k] * np.eye(D)


def _params(covariance_type, rng):
    covariance = get_covariance_type(covariance_type)
    cov = torch.as_tensor(_random_covariances(covariance_type, rng))
    P, ok = covariance.factorise(cov)
    assert bool(ok.all())
    weights = torch.as_tensor(rng.dirichlet(np.ones(K), R))
    means = torch.as_tensor(rng.normal(0, 2, (R, K, D)))
    return covariance, MixtureParameters(weights, means, cov, P)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_log_gaussian_prob_matches_scipy(covariance_type):
    rng = np.random.default_rng(0)
    covariance, params = _params(covariance_type, rng)
    X = rng.normal(0, 3, (N, D))
    got = estimate_log_gaussian_prob(torch.as_tensor(X), params.means, params.precisions_cholesky, covariance)
    assert got.shape == (R, N, K)
    cov = params.covariances.numpy()
    for r in range(R):
        for k in range(K):
            ref = multivariate_normal(params.means[r, k].numpy(), _dense(cov, covariance_type, r, k)).logpdf(X)
            np.testing.assert_allclose(got[r, :, k].numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precision_cholesky_conventions(covariance_type):
    rng = np.random.default_rng(1)
    covariance, params = _params(covariance_type, rng)
    P = params.precisions_cholesky
    precisions = covariance.precisions(P)
    if covariance_type in ("full", "tied"):
        assert torch.allclose(P, P.triu())  # upper triangular, as scikit-learn
        eye = torch.eye(D, dtype=torch.float64)
        torch.testing.assert_close(precisions @ params.covariances, eye.expand_as(precisions), rtol=0, atol=1e-10)
        torch.testing.assert_close(covariance.precisions_cholesky_from_precisions(precisions), P)
    else:
        torch.testing.assert_close(precisions * params.covariances, torch.ones_like(precisions))
    torch.testing.assert_close(covariance.covariances_from_precisions_cholesky(P), params.covariances)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_m_step_matches_sklearn_for_any_centre(covariance_type):
    """Statistics about an arbitrary centre give scikit-learn's M-step."""
    rng = np.random.default_rng(2)
    X = rng.normal(0, 2, (N, D)) + 5.0
    resp = rng.dirichlet(np.ones(K), N)
    covariance = get_covariance_type(covariance_type)
    centre = torch.as_tensor(rng.normal(5, 1, (1, K, D)))
    nk, s1, s2 = sufficient_statistics(torch.as_tensor(X), torch.as_tensor(resp)[None], centre, covariance)
    stats = Statistics(torch.zeros(1, dtype=torch.float64), nk, s1, s2)
    params, ok = solve_m_step(stats, centre, covariance, 1e-3, torch.float64)
    assert bool(ok.all())
    weights, means, cov = _estimate_gaussian_parameters(X, resp, 1e-3, covariance_type)
    np.testing.assert_allclose(params.weights[0].numpy(), weights / weights.sum(), rtol=1e-12)
    np.testing.assert_allclose(params.means[0].numpy(), means, rtol=1e-12)
    np.testing.assert_allclose(covariance.to_sklearn(params.covariances[0]).numpy(), cov, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_chunked_e_step_equals_one_chunk(covariance_type):
    rng = np.random.default_rng(3)
    covariance, params = _params(covariance_type, rng)
    data = scanned(torch.as_tensor(rng.normal(0, 3, (N, D))), torch.float64)
    whole = e_step(data, params, covariance, rows=N)
    for rows in (1, 7, 59):
        chunked = e_step(data, params, covariance, rows=rows)
        for a, b in zip(whole, chunked, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    resp_fn = lambda start, x: torch.softmax(x[None, :, :K].expand(R, -1, -1), -1)  # noqa: E731
    whole = statistics_from_resp(data, resp_fn, params.means, covariance, rows=N)
    torch.testing.assert_close(statistics_from_resp(data, resp_fn, params.means, covariance, rows=5).s2, whole.s2)


def test_log_space_keeps_far_points_finite():
    """Points hundreds of standard deviations away: no underflow to -inf, no NaN."""
    X, _ = make_blobs(100, 2, 2, 5.0, seed=0)
    for dtype in ("float32", "float64"):
        gm = GaussianMixture(2, random_state=0, dtype=dtype).fit(X)
        far = np.array([[1e3, 1e3], [-1e3, 5e2]])
        logp = gm.score_samples(far)
        assert np.all(np.isfinite(logp)) and np.all(logp < -1e3)
        proba = gm.predict_proba(far)
        assert np.all(np.isfinite(proba))
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)


def test_responsibilities_normalised_in_log_space():
    rng = np.random.default_rng(4)
    covariance, params = _params("full", rng)
    X = torch.as_tensor(rng.normal(0, 50, (N, D)))  # far from every mean
    log_norm, log_resp = estimate_log_prob_resp(X, params, covariance)
    assert torch.isfinite(log_resp).all() and torch.isfinite(log_norm).all()
    torch.testing.assert_close(log_resp.exp().sum(-1), torch.ones(R, N, dtype=torch.float64))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_with_large_offset_matches_float64(covariance_type):
    """Features around 1e4 with unit spread: float32 keeps the covariances accurate."""
    X, _ = make_blobs(300, 3, 2, 4.0, seed=8)
    X = X + 1e4
    ref = GaussianMixture(2, covariance_type=covariance_type, random_state=0, tol=1e-6).fit(X)
    init = dict(weights_init=ref.weights_, means_init=ref.means_, precisions_init=ref.precisions_)
    ours = GaussianMixture(2, covariance_type=covariance_type, dtype="float32", max_iter=3, **init).fit(X)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-6)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_exp_and_logsumexp(dtype):
    from torchgmm._math import exp_, logsumexp

    x = torch.empty(200, 7, dtype=dtype).uniform_(-2000, 5)
    x[:, 0] = torch.empty(200, dtype=dtype).uniform_(-3, 3)  # one term of order one per row
    torch.testing.assert_close(logsumexp(x, dim=-1), torch.logsumexp(x, dim=-1))
    y = exp_(x.clone())
    tiny = torch.finfo(dtype).tiny
    assert bool(((y == 0) | (y >= tiny)).all())  # never a denormal
    assert bool((y[x < torch.log(torch.tensor(tiny, dtype=dtype))] == 0).all())  # underflow is exactly 0
    big = x > -50
    torch.testing.assert_close(y[big], torch.exp(x[big]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sqrt_keeps_zeros_exact(dtype):
    from torchgmm._math import sqrt_

    tiny = torch.finfo(dtype).tiny
    x = torch.tensor([0.0, tiny, 4 * tiny, 1e-30, 0.25, 1.0, 9e6], dtype=dtype)
    expected = np.sqrt(x.numpy())
    expected[1] = 0.0  # the smallest normal number itself is taken as zero (no responsibility is that small)
    np.testing.assert_array_equal(sqrt_(x.clone()).numpy(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_responsibilities_have_no_denormals(dtype):
    """Entries that would be denormal after the division by the total are exact zeros; the rest are softmax."""
    from torchgmm._math import normalise_

    tiny = torch.finfo(dtype).tiny
    K = 64
    log_prob = torch.empty(500, K, dtype=dtype).uniform_(math.log(tiny) - 5, math.log(tiny) + 8)
    log_prob[:, :K:2] = torch.empty(500, K // 2, dtype=dtype).uniform_(-1, 0)  # totals up to K / 2
    log_norm, resp = normalise_(log_prob.clone())
    assert bool(((resp == 0) | (resp >= tiny)).all())
    expected = np.exp(log_prob.numpy() - log_norm.numpy()[:, None])
    np.testing.assert_allclose(resp.numpy(), expected, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-30)
    np.testing.assert_allclose(log_norm.numpy(), scipy.special.logsumexp(log_prob.numpy(), axis=1), rtol=1e-6)


def fit_many_nearly_empty_components(covariance_type: str, device: str) -> None:
    """K=512 clusters in 128-D, 10k rows, float32: most components hold a handful of rows."""
    generator = torch.Generator(device).manual_seed(0)
    K, D, N = 512, 128, 10_000
    centres = 4 * torch.randn(K, D, generator=generator, device=device)
    labels = torch.randint(K, (N,), generator=generator, device=device)
    X = centres[labels] + torch.randn(N, D, generator=generator, device=device)
    gm = GaussianMixture(K, covariance_type=covariance_type, init_params="random_from_data", max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FailedRestartWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    assert bool(torch.isfinite(gm.covariances_).all()) and bool((gm.covariances_ >= gm.reg_covar * 0.999).all())


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_rounding_never_makes_a_variance_negative(covariance_type):
    """Float32 moments of nearly empty components can round a variance below 0: it is clamped, not failed."""
    fit_many_nearly_empty_components(covariance_type, "cpu")


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_variance_rounded_below_zero_is_clamped_before_reg_covar(covariance_type):
    """Moments summed in float32 can leave ``s2 / nk - shift^2`` of a nearly empty component a little below 0
    (here -5e-6): the true variance never is, so it is taken as 0 and the component gets exactly reg_covar,
    a valid covariance, instead of a negative one that would fail and need a repair."""
    covariance = get_covariance_type(covariance_type)
    nk = torch.tensor([[50.0, 0.25]], dtype=torch.float64)
    shift = torch.tensor([[[0.5, -1.0], [2.0, 3.0]]], dtype=torch.float64)
    variance = torch.tensor([[[1.0, 2.0], [-5e-6, -5e-6]]], dtype=torch.float64)  # per feature, about the new mean
    s2 = (variance + shift**2) * nk.unsqueeze(-1)
    if covariance_type == "spherical":
        s2 = s2.sum(-1, keepdim=True)
    stats = Statistics(torch.zeros(1, dtype=torch.float64), nk, shift * nk.unsqueeze(-1), s2)
    centre = torch.zeros(1, 2, 2, dtype=torch.float64)
    params, ok = solve_m_step(stats, centre, covariance, 1e-6, torch.float64)
    assert ok.tolist() == [[True, True]]
    empty = params.covariances[0, 1]
    torch.testing.assert_close(empty, torch.full_like(empty, 1e-6), rtol=1e-9, atol=0)
