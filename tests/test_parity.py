"""Numerical parity with scikit-learn in float64, from the same initial parameters."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import COVARIANCE_TYPES, make_blobs
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from torchgmm import ConvergenceWarning, GaussianMixture

RTOL = 1e-6


def _sklearn_init(X, n_components, covariance_type, seed):
    """Initial parameters as scikit-learn's own k-means initialisation gives them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        sk = SkGaussianMixture(n_components, covariance_type=covariance_type, max_iter=0, random_state=seed).fit(X)
    return {"weights_init": sk.weights_, "means_init": sk.means_, "precisions_init": sk.precisions_}


def _assert_same_fit(ours, ref, X):
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ == ref.converged_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=RTOL)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=RTOL)
    np.testing.assert_allclose(ours.weights_, ref.weights_, rtol=RTOL)
    scale = np.abs(ref.means_).max()
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=RTOL, atol=RTOL * scale)
    for name in ("covariances_", "precisions_", "precisions_cholesky_"):
        a, b = getattr(ours, name), getattr(ref, name)
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * np.abs(b).max(), err_msg=name)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=RTOL)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    "shape, tol",
    [((150, 3, 3, 6.0), 1e-3), ((120, 5, 4, 2.0), 1e-6)],
    ids=["separated", "overlapping-tight-tol"],
)
def test_parity_with_sklearn_same_init(covariance_type, shape, tol):
    n_per, n_features, n_components, spread = shape
    X, _ = make_blobs(n_per, n_features, n_components, spread, seed=1)
    init = _sklearn_init(X, n_components, covariance_type, seed=3)
    kwargs = dict(covariance_type=covariance_type, tol=tol, max_iter=500, reg_covar=1e-6, **init)
    ref = SkGaussianMixture(n_components, **kwargs).fit(X)
    ours = GaussianMixture(n_components, **kwargs).fit(X)
    _assert_same_fit(ours, ref, X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_parity_when_max_iter_stops_the_fit(covariance_type):
    X, _ = make_blobs(100, 4, 3, 1.5, seed=5)
    init = _sklearn_init(X, 3, covariance_type, seed=0)
    kwargs = dict(covariance_type=covariance_type, tol=0.0, max_iter=7, **init)
    with pytest.warns(SkConvergenceWarning):
        ref = SkGaussianMixture(3, **kwargs).fit(X)
    with pytest.warns(ConvergenceWarning):
        ours = GaussianMixture(3, **kwargs).fit(X)
    _assert_same_fit(ours, ref, X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_parity_with_large_reg_covar_and_offset(covariance_type):
    # Data far from the origin: our centring must not change the answer.
    X, _ = make_blobs(80, 3, 2, 4.0, seed=7)
    X = X + 1e3
    init = _sklearn_init(X, 2, covariance_type, seed=1)
    kwargs = dict(covariance_type=covariance_type, reg_covar=0.1, tol=1e-8, max_iter=300, **init)
    ref = SkGaussianMixture(2, **kwargs).fit(X)
    ours = GaussianMixture(2, **kwargs).fit(X)
    _assert_same_fit(ours, ref, X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_parity_of_scoring_with_parameters_set_by_hand(covariance_type):
    """Our inference on scikit-learn's fitted parameters equals scikit-learn's."""
    X, _ = make_blobs(100, 4, 3, 3.0, seed=2)
    ref = SkGaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    ours = GaussianMixture(3, covariance_type=covariance_type)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        setattr(ours, name, getattr(ref, name))
    ours.n_features_in_ = X.shape[1]
    rng = np.random.default_rng(0)
    Xt = rng.normal(0, 5, (50, 4))
    np.testing.assert_allclose(ours.score_samples(Xt), ref.score_samples(Xt), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), atol=1e-10)
    np.testing.assert_allclose(ours.score(Xt), ref.score(Xt), rtol=1e-10)
    np.testing.assert_allclose(ours.bic(Xt), ref.bic(Xt), rtol=1e-10)
    np.testing.assert_allclose(ours.aic(Xt), ref.aic(Xt), rtol=1e-10)
