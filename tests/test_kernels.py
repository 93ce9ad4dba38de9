"""The full and tied E-step kernel against a NumPy/SciPy reference, and the rounding check of float32 passes.

:func:`torchgmm.passes.choose_kernel` keeps a float32 pass in float32 unless its folded densities would round
by more than :data:`torchgmm.passes.FOLDING_TOLERANCE` nats: for the whitened residuals of full and tied
covariances that is ``2 eps |mu|_P sqrt(D)``, linear in the distance of a mean from the data mean.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import torchgmm.passes
from torchgmm import ConvergenceWarning, GaussianMixture
from torchgmm.covariance import get_covariance_type
from torchgmm.data import scanned
from torchgmm.em import MixtureParameters, Statistics
from torchgmm.kernels import kernel_for
from torchgmm.passes import FOLDING_TOLERANCE, choose_kernel, e_step, fold_rounding

R, K, D, N = 2, 3, 4, 50
TRIANGULAR = ["full", "tied"]


def _params(covariance_type: str, rng: np.random.Generator, spread: float = 2.0) -> MixtureParameters:
    covariance = get_covariance_type(covariance_type)
    components = K if covariance_type == "full" else 1
    A = rng.normal(size=(R, components, D, D))
    cov = torch.as_tensor(A @ np.swapaxes(A, -1, -2) + 0.5 * np.eye(D))
    P, ok = covariance.factorise(cov)
    assert bool(ok.all())
    weights = torch.as_tensor(rng.dirichlet(np.ones(K), R))
    means = torch.as_tensor(rng.normal(0, spread, (R, K, D)))
    return MixtureParameters(weights, means, cov, P)


def _reference(X: np.ndarray, params: MixtureParameters, covariance_type: str):
    """log-likelihood, n_k, s1 and s2 about the means, from SciPy densities and NumPy sums."""
    weights, means, cov = (t.numpy() for t in (params.weights, params.means, params.covariances))
    ll, nk, s1, s2 = [], [], [], []
    for r in range(R):
        log_prob = np.stack(
            [
                np.log(weights[r, k]) + multivariate_normal(means[r, k], cov[r, k if cov.shape[1] > 1 else 0]).logpdf(X)
                for k in range(K)
            ],
            axis=1,
        )
        norm = logsumexp(log_prob, axis=1)
        resp = np.exp(log_prob - norm[:, None])
        centred = X[None, :, :] - means[r][:, None, :]  # [K, N, D]
        scatter = np.einsum("kn,kni,knj->kij", resp.T, centred, centred)
        ll.append(norm.sum())
        nk.append(resp.sum(0))
        s1.append(np.einsum("kn,kni->ki", resp.T, centred))
        s2.append(scatter if covariance_type == "full" else scatter.sum(0, keepdims=True))
    return [np.array(v) for v in (ll, nk, s1, s2)]


def _run(kernel, X: torch.Tensor, params: MixtureParameters, tile: int):
    prepared = kernel.prepare(params.weights, params.means, params.precisions_cholesky)
    into = Statistics.zeros(kernel.covariance, R, K, D, X.dtype, X.device)
    for x in X.split(tile):
        kernel.accumulate(x, prepared, into)
    total = into.to(torch.float64)
    return kernel.finish(total, params.means.to(torch.float64), params.precisions_cholesky.to(torch.float64))


@pytest.mark.parametrize("covariance_type", TRIANGULAR)
def test_full_and_tied_kernel_matches_the_reference_in_float64(covariance_type):
    rng = np.random.default_rng(1)
    params = _params(covariance_type, rng)
    X = rng.normal(0, 3, (N, D))
    kernel = kernel_for(get_covariance_type(covariance_type))
    for tile in (N, 7):
        got = _run(kernel, torch.as_tensor(X), params, tile)
        for name, a, b in zip(got._fields, got, _reference(X, params, covariance_type), strict=True):
            np.testing.assert_allclose(a.numpy(), b, rtol=1e-10, atol=1e-10 * np.abs(b).max(), err_msg=name)


def _far_params(covariance_type: str, distance: float) -> MixtureParameters:
    """Unit-variance components whose means sit ``distance`` standard deviations from the data mean."""
    params = _params(covariance_type, np.random.default_rng(3))
    covariance = get_covariance_type(covariance_type)
    components = K if covariance_type == "full" else 1
    cov = torch.eye(D, dtype=torch.float64).expand(R, components, D, D).clone()
    P, _ = covariance.factorise(cov)
    means = torch.zeros(R, K, D, dtype=torch.float64)
    means[:, :, 0] = torch.linspace(-distance, distance, K, dtype=torch.float64)
    return MixtureParameters(params.weights, means, cov, P).map(lambda t: t.to(torch.float32))


@pytest.mark.parametrize("covariance_type", TRIANGULAR)
def test_choose_kernel_keeps_float32_until_the_whitened_rounding_reaches_the_tolerance(covariance_type, working_dtypes):
    """The whitened rounding is ``2 eps |mu|_P sqrt(D)``: float32 up to a distance of about 1e4 here (D=4),
    float64 beyond, where the old rule (``eps |mu|_P^2``) switched from about 290 on."""
    covariance = get_covariance_type(covariance_type)
    eps = torch.finfo(torch.float32).eps
    limit = FOLDING_TOLERANCE / (2 * eps * D**0.5)  # the distance at which the rounding reaches the tolerance
    for distance, expected in ((0.5 * limit, torch.float32), (2.0 * limit, torch.float64)):
        params = _far_params(covariance_type, distance)
        kernel, dtype = choose_kernel(params, covariance)
        assert kernel is kernel_for(covariance) and dtype == expected, distance
        rounding = fold_rounding(params, covariance)
        assert rounding == pytest.approx(2 * eps * distance * D**0.5, rel=1e-6)
    assert working_dtypes == [torch.float32, torch.float64]
    assert choose_kernel(_params(covariance_type, np.random.default_rng(4)), covariance)[1] == torch.float64


@pytest.mark.parametrize("covariance_type", TRIANGULAR)
def test_far_tight_clusters_in_float32_are_accurate(covariance_type):
    """Unit clusters 2000 standard deviations from the data mean: far past the old rule's switch to float64,
    the float32 whitened pass keeps the statistics within 1e-5 of float64 (and passes beyond the new limit
    run in float64)."""
    params = _far_params(covariance_type, 2000.0)
    rng = np.random.default_rng(5)
    means = params.means[0].double().numpy()
    X = np.concatenate([m + rng.normal(size=(2000, D)) for m in means])
    params64 = params.map(lambda t: t.to(torch.float64))
    reference = e_step(scanned(torch.as_tensor(X)), params64, get_covariance_type(covariance_type))
    data = scanned(torch.as_tensor(X, dtype=torch.float32))
    assert choose_kernel(params, get_covariance_type(covariance_type))[1] == torch.float32
    got = e_step(data, params, get_covariance_type(covariance_type))
    for name in ("nk", "s2"):
        a, b = getattr(got, name), getattr(reference, name)
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5, name
    assert abs(float(got.log_likelihood[0] / reference.log_likelihood[0]) - 1) < 1e-6


def _thin_components(n: int, d: int, k: int, floor: float = 0.3, seed: int = 0) -> np.ndarray:
    """Anisotropic, overlapping clusters, some of them thin: the bench's harder data."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, (k, d))
    shapes = rng.normal(size=(k, d, d)) / np.sqrt(d) + floor * np.eye(d)
    labels = rng.choice(k, n, p=rng.dirichlet(np.ones(k)))
    return centres[labels] + np.einsum("nd,nde->ne", rng.normal(size=(n, d)), shapes[labels])


def test_whitened_float32_stays_float32_for_thin_components_far_in_their_own_units(working_dtypes):
    """Thin components put the data mean hundreds of their standard deviations away. The whitened residual is
    off by about eps |mu|_P, not eps |mu|_P^2, so the float32 pass stays float32 and accurate (the old rule,
    eps |mu|_P^2 > 1e-2, sent these passes to float64)."""
    X = _thin_components(6000, 32, 16, floor=0.05)
    covariance = get_covariance_type("full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(16, max_iter=10, tol=0.0, random_state=0).fit(X)
    data64 = scanned(torch.as_tensor(X))
    params = MixtureParameters(
        torch.as_tensor(gm.weights_)[None],
        (torch.as_tensor(gm.means_) - data64.shift)[None],
        torch.as_tensor(gm.covariances_)[None],
        torch.as_tensor(gm.precisions_cholesky_)[None],
    )
    params32 = params.map(lambda t: t.to(torch.float32))
    squared = torchgmm.passes.largest_distance(params32, covariance)
    assert squared * torch.finfo(torch.float32).eps > 1e-2  # the old rule's float64 fallback
    working_dtypes.clear()
    got = e_step(scanned(torch.as_tensor(X, dtype=torch.float32)), params32, covariance)
    assert working_dtypes == [torch.float32]
    reference = e_step(data64, params, covariance)
    assert abs(float(got.log_likelihood[0] / reference.log_likelihood[0]) - 1) < 1e-6
    for name in ("nk", "s2"):
        a, b = getattr(got, name), getattr(reference, name)
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5, name
    # s1 is about the means, a small difference of large sums: compare it with the size of the data
    scale = float(reference.nk.max()) * float(np.abs(X - X.mean(0)).max())
    assert float((got.s1 - reference.s1).abs().max()) < 1e-5 * scale
