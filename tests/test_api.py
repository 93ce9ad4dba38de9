"""The scikit-learn estimator contract of ``torchgmm.GaussianMixture`` and its input/output conventions.

Parameters (clone, get/set_params, repr), use inside scikit-learn meta-estimators, NumPy in -> NumPy out and
tensor in -> tensor out, dtypes, the fitted attributes (shapes, consistency, agreement with scikit-learn's
formulas), sampling, warm start and verbose output.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, dense_covariances, identity_precisions, make_blobs
from scipy.stats import multivariate_normal
from sklearn.base import clone
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from torchgmm import ConvergenceWarning, GaussianMixture

K, D = 3, 3
INIT_PARAMS = ["kmeans", "k-means++", "random", "random_from_data"]
ARRAY_ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


@pytest.fixture(scope="module")
def X():
    return make_blobs(n_per=60, n_features=D, n_components=K, seed=0)[0]


def assert_close_within(actual, expected, tolerance, what):
    """``|actual - expected| <= tolerance`` elementwise, with an array of tolerances."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    bad = np.abs(actual - expected) > tolerance
    assert not bad.any(), f"{what}: {actual} != {expected} within {tolerance}"


def covariance_shape(covariance_type, k=K, d=D):
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]


def n_free_parameters(covariance_type, k, d):
    cov = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d, "spherical": k}[covariance_type]
    return cov + k * d + k - 1


def sklearn_copy(gm):
    """A scikit-learn GaussianMixture holding our fitted parameters."""
    sk = SkGaussianMixture(n_components=gm.n_components, covariance_type=gm.covariance_type)
    for name in ARRAY_ATTRIBUTES:
        setattr(sk, name, np.asarray(getattr(gm, name), dtype=np.float64))
    sk.n_features_in_ = gm.n_features_in_
    return sk


# ------------------------------------------------------------------------------------ parameters


def test_clone_gives_equal_params(X):
    means = np.zeros((K, D))
    gm = GaussianMixture(K, covariance_type="diag", tol=1e-4, n_init=2, means_init=means, random_state=3)
    gm.fit(X)
    copy = clone(gm)
    assert type(copy) is GaussianMixture and copy is not gm
    params, copied = gm.get_params(), copy.get_params()
    assert params.keys() == copied.keys()
    for name, value in params.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(copied[name], value)
        else:
            assert copied[name] == value, name
    assert copied["means_init"] is not means  # deep-copied, as scikit-learn does
    assert not hasattr(copy, "means_")  # a clone is unfitted
    check_is_fitted(gm)


def test_get_params_lists_constructor_arguments():
    params = GaussianMixture().get_params()
    assert list(params) == [
        "n_components",
        "covariance_type",
        "tol",
        "reg_covar",
        "max_iter",
        "n_init",
        "init_params",
        "weights_init",
        "means_init",
        "precisions_init",
        "random_state",
        "warm_start",
        "verbose",
        "verbose_interval",
        "device",
        "dtype",
        "batch_size",
        "matmul_precision",
        "learning_decay",
        "learning_offset",
        "checkpoint_path",
        "checkpoint_interval",
        "strategy",
        "race_survivors",
        "race_first_cut",
        "init_whiten",
        "anneal_beta_start",
        "anneal_steps",
        "anneal_iter",
        "split_merge_candidates",
        "split_merge_rounds",
        "fixed_params",
    ]
    assert params["n_components"] == 1 and params["covariance_type"] == "full" and params["tol"] == 1e-3
    assert GaussianMixture().get_params(deep=False) == params


def test_get_set_params_round_trip():
    source = GaussianMixture(
        4, covariance_type="tied", reg_covar=1e-4, max_iter=7, init_params="random", dtype="float64"
    )
    target = GaussianMixture()
    assert target.set_params(**source.get_params()) is target
    assert target.get_params() == source.get_params()
    target.set_params(n_components=2, warm_start=True)
    assert target.n_components == 2 and target.warm_start is True
    assert target.get_params()["n_components"] == 2
    assert source.n_components == 4


def test_repr_shows_non_default_params():
    assert repr(GaussianMixture()) == "GaussianMixture()"
    # a default value given explicitly is not shown
    assert repr(GaussianMixture(1, covariance_type="full")) == "GaussianMixture()"
    gm = GaussianMixture(3, covariance_type="diag", tol=1e-4, random_state=0, device="cpu")
    assert (
        repr(gm) == "GaussianMixture(n_components=3, covariance_type='diag', tol=0.0001, random_state=0, device='cpu')"
    )
    gm.set_params(covariance_type="full")
    assert "covariance_type" not in repr(gm)
    assert "means_init=array(" in repr(GaussianMixture(means_init=np.zeros((1, 2))))


# -------------------------------------------------------------------------------- meta-estimators


def test_pipeline(X):
    pipe = make_pipeline(StandardScaler(), GaussianMixture(K, random_state=0)).fit(X)
    labels = pipe.predict(X)
    assert isinstance(labels, np.ndarray) and labels.shape == (len(X),)
    assert set(np.unique(labels)) <= set(range(K))
    Xs = StandardScaler().fit_transform(X)
    alone = GaussianMixture(K, random_state=0).fit(Xs)
    np.testing.assert_array_equal(labels, alone.predict(Xs))
    assert pipe.score(X) == pytest.approx(alone.score(Xs), rel=1e-10)
    np.testing.assert_allclose(pipe.score_samples(X), alone.score_samples(Xs), rtol=1e-10)
    np.testing.assert_allclose(pipe.predict_proba(X), alone.predict_proba(Xs), atol=1e-10)


def test_grid_search_chooses_several_components(X):
    search = GridSearchCV(GaussianMixture(random_state=0), {"n_components": [1, 2, 3]}, cv=3).fit(X)
    assert search.best_params_["n_components"] >= 2
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    assert scores[0] < scores[1]  # one Gaussian is clearly worse on three blobs
    assert isinstance(search.best_estimator_, GaussianMixture)
    assert search.best_estimator_.n_components == search.best_params_["n_components"]
    assert search.score(X) == pytest.approx(search.best_estimator_.score(X))


# ----------------------------------------------------------------------------------- input/output


def test_numpy_in_numpy_out(X):
    gm = GaussianMixture(K, random_state=0)
    labels = gm.fit_predict(X)
    assert isinstance(labels, np.ndarray) and labels.shape == (len(X),) and labels.dtype == np.int64
    for name in ARRAY_ATTRIBUTES + ("init_lower_bounds_", "init_converged_"):
        assert isinstance(getattr(gm, name), np.ndarray), name
    assert isinstance(gm.lower_bound_, float) and isinstance(gm.n_iter_, int) and isinstance(gm.converged_, bool)
    assert isinstance(gm.lower_bounds_, list) and isinstance(gm.n_features_in_, int)
    pred = gm.predict(X)
    assert isinstance(pred, np.ndarray) and pred.dtype == np.int64 and pred.shape == (len(X),)
    proba = gm.predict_proba(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (len(X), K)
    log_prob = gm.score_samples(X)
    assert isinstance(log_prob, np.ndarray) and log_prob.shape == (len(X),)
    assert isinstance(gm.score(X), float) and isinstance(gm.bic(X), float) and isinstance(gm.aic(X), float)
    # array-likes (lists) are accepted and give NumPy
    assert isinstance(gm.predict(X[:5].tolist()), np.ndarray)


def test_tensor_in_tensor_out(X):
    Xt = torch.as_tensor(X)
    gm = GaussianMixture(K, random_state=0)
    labels = gm.fit_predict(Xt)
    assert isinstance(labels, torch.Tensor) and labels.shape == (len(X),) and labels.device == Xt.device
    for name in ARRAY_ATTRIBUTES:
        value = getattr(gm, name)
        assert isinstance(value, torch.Tensor), name
        assert value.device == Xt.device
    for method in ("predict", "predict_proba", "score_samples"):
        out = getattr(gm, method)(Xt)
        assert isinstance(out, torch.Tensor) and out.device == Xt.device, method
    assert isinstance(gm.score(Xt), float)
    # NumPy input after a fit on a tensor gives NumPy, with the same values
    for method in ("predict", "predict_proba", "score_samples"):
        out = getattr(gm, method)(X)
        assert isinstance(out, np.ndarray), method
        np.testing.assert_allclose(out, getattr(gm, method)(Xt).numpy(), rtol=1e-12, atol=1e-12)


def test_tensor_input_after_numpy_fit(X):
    gm = GaussianMixture(K, random_state=0).fit(X)
    out = gm.predict_proba(torch.as_tensor(X))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), gm.predict_proba(X), rtol=1e-12, atol=1e-12)


def test_tensor_fit_matches_numpy_fit(X):
    a = GaussianMixture(K, random_state=0).fit(X)
    b = GaussianMixture(K, random_state=0).fit(torch.as_tensor(X))
    for name in ARRAY_ATTRIBUTES:
        np.testing.assert_allclose(getattr(b, name).numpy(), getattr(a, name), rtol=1e-10, atol=1e-12, err_msg=name)


def test_requires_grad_tensor_is_accepted(X):
    Xt = torch.as_tensor(X).requires_grad_(True)
    gm = GaussianMixture(K, random_state=0).fit(Xt)
    assert not gm.means_.requires_grad
    assert not gm.predict_proba(Xt).requires_grad


@pytest.mark.parametrize(
    "make_input, dtype, expected",
    [
        (lambda X: X, None, np.float64),
        (lambda X: X.astype(np.float32), None, np.float32),
        (lambda X: np.round(X * 10).astype(np.int64), None, np.float32),
        (lambda X: np.round(X * 10).astype(np.int32), None, np.float32),
        (lambda X: X.astype(np.float32), "float64", np.float64),
        (lambda X: X.astype(np.float32), torch.float64, np.float64),
        (lambda X: X, "float32", np.float32),
    ],
    ids=["f64", "f32", "int64", "int32", "f32-as-f64", "f32-as-torch-f64", "f64-as-f32"],
)
def test_dtype_numpy(X, make_input, dtype, expected):
    data = make_input(X)
    gm = GaussianMixture(K, random_state=0, dtype=dtype).fit(data)
    for name in ARRAY_ATTRIBUTES:
        assert getattr(gm, name).dtype == expected, name
    assert gm.predict_proba(data).dtype == expected
    assert gm.score_samples(data).dtype == expected
    assert gm.sample(5)[0].dtype == expected


@pytest.mark.parametrize(
    "torch_dtype, dtype, expected",
    [
        (torch.float32, None, torch.float32),
        (torch.float64, None, torch.float64),
        (torch.int64, None, torch.float32),
        (torch.float32, "float64", torch.float64),
        (torch.float64, "float32", torch.float32),
    ],
)
def test_dtype_tensor(X, torch_dtype, dtype, expected):
    data = torch.as_tensor(np.round(X * 10) if not torch_dtype.is_floating_point else X).to(torch_dtype)
    gm = GaussianMixture(K, random_state=0, dtype=dtype).fit(data)
    for name in ARRAY_ATTRIBUTES:
        assert getattr(gm, name).dtype == expected, name
    assert gm.predict_proba(data).dtype == expected


def test_float32_fit_close_to_float64_fit(X):
    a = GaussianMixture(K, random_state=0).fit(X)
    b = GaussianMixture(K, random_state=0).fit(X.astype(np.float32))
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(b.weights_, a.weights_, atol=1e-4)


# --------------------------------------------------------------------------- predictions and scores


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", INIT_PARAMS)
def test_fit_predict_equals_fit_then_predict(X, covariance_type, init_params):
    kwargs = dict(covariance_type=covariance_type, init_params=init_params, n_init=2, random_state=7)
    labels = GaussianMixture(K, **kwargs).fit_predict(X)
    gm = GaussianMixture(K, **kwargs).fit(X)
    np.testing.assert_array_equal(labels, gm.predict(X))
    assert len(np.unique(labels)) > 1


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_random_state_same_fit(X, covariance_type):
    a = GaussianMixture(K, covariance_type=covariance_type, n_init=2, init_params="random", random_state=5).fit(X)
    b = GaussianMixture(K, covariance_type=covariance_type, n_init=2, init_params="random", random_state=5).fit(X)
    for name in ARRAY_ATTRIBUTES:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.init_lower_bounds_, b.init_lower_bounds_)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predictions_are_consistent(X, covariance_type):
    gm = GaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(X)
    proba = gm.predict_proba(X)
    assert (proba >= 0).all() and (proba <= 1).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(gm.predict(X), proba.argmax(1))
    log_prob = gm.score_samples(X)
    assert gm.score(X) == pytest.approx(log_prob.mean(), rel=1e-12)
    # score_samples is the log-density of the mixture, checked against SciPy
    covs = dense_covariances(gm)
    density = sum(gm.weights_[k] * multivariate_normal(gm.means_[k], covs[k]).pdf(X) for k in range(K))
    np.testing.assert_allclose(log_prob, np.log(density), rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_bic_aic(X, covariance_type):
    gm = GaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(X)
    n = len(X)
    p = n_free_parameters(covariance_type, K, D)
    log_likelihood = gm.score(X) * n
    assert gm.bic(X) == pytest.approx(-2 * log_likelihood + p * math.log(n), rel=1e-12)
    assert gm.aic(X) == pytest.approx(-2 * log_likelihood + 2 * p, rel=1e-12)
    sk = sklearn_copy(gm)
    assert sk._n_parameters() == p
    assert gm.score(X) == pytest.approx(sk.score(X), rel=1e-10)
    assert gm.bic(X) == pytest.approx(sk.bic(X), rel=1e-10)
    assert gm.aic(X) == pytest.approx(sk.aic(X), rel=1e-10)
    np.testing.assert_allclose(gm.predict_proba(X), sk.predict_proba(X), atol=1e-10)
    # on a subset the sample count in the penalty changes
    assert gm.bic(X[:50]) == pytest.approx(sk.bic(X[:50]), rel=1e-10)
    assert gm.bic(torch.as_tensor(X)) == pytest.approx(gm.bic(X), rel=1e-12)


# ----------------------------------------------------------------------------------------- sample


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample(X, covariance_type):
    gm = GaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(X)
    n = 20000
    samples, labels = gm.sample(n)
    assert isinstance(samples, np.ndarray) and isinstance(labels, np.ndarray)
    assert samples.shape == (n, D) and labels.shape == (n,)
    assert labels.min() >= 0 and labels.max() < K
    assert (np.diff(labels) >= 0).all()  # grouped by component, in component order
    assert np.isfinite(samples).all()
    # label frequencies follow the weights (binomial standard error)
    freq = np.bincount(labels, minlength=K) / n
    assert_close_within(freq, gm.weights_, 5 * np.sqrt(gm.weights_ * (1 - gm.weights_) / n), "label frequencies")
    # mixture mean: sum_k w_k mu_k, within 5 standard errors of the sample mean
    covs = dense_covariances(gm)
    mean = gm.weights_ @ gm.means_
    total = np.einsum("k,kij->ij", gm.weights_, covs + np.einsum("ki,kj->kij", gm.means_, gm.means_))
    total -= np.outer(mean, mean)
    assert_close_within(samples.mean(0), mean, 5 * np.sqrt(np.diag(total) / n), "sample mean")
    # each component's draws have that component's mean and covariance
    for k in range(K):
        part = samples[labels == k]
        m = len(part)
        sd = np.sqrt(np.diag(covs[k]))
        assert_close_within(part.mean(0), gm.means_[k], 6 * sd / np.sqrt(m), f"mean of component {k}")
        se = np.sqrt((np.outer(sd**2, sd**2) + covs[k] ** 2) / m)
        assert_close_within(np.cov(part.T), covs[k], 6 * se, f"covariance of component {k}")


def test_sample_reproducible_with_int_seed(X):
    gm = GaussianMixture(K, random_state=11).fit(X)
    a, ya = gm.sample(100)
    b, yb = gm.sample(100)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    gm.set_params(random_state=12)
    c, _ = gm.sample(100)
    assert not np.allclose(a, c)


def test_sample_differs_with_random_state_instance(X):
    gm = GaussianMixture(K, random_state=np.random.RandomState(0)).fit(X)
    a, _ = gm.sample(50)
    b, _ = gm.sample(50)
    assert not np.allclose(a, b)


def test_sample_single_and_tensor(X):
    gm = GaussianMixture(K, random_state=0).fit(torch.as_tensor(X, dtype=torch.float32))
    samples, labels = gm.sample(1)
    assert isinstance(samples, torch.Tensor) and isinstance(labels, torch.Tensor)
    assert samples.shape == (1, D) and labels.shape == (1,)
    assert samples.dtype == torch.float32 and samples.device == gm.means_.device
    samples, labels = gm.sample(np.int64(30))
    assert samples.shape == (30, D) and bool(((labels >= 0) & (labels < K)).all())


# ------------------------------------------------------------------------------- fitted attributes


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fitted_attribute_shapes(X, covariance_type):
    gm = GaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(X)
    shape = covariance_shape(covariance_type)
    assert gm.weights_.shape == (K,)
    np.testing.assert_allclose(gm.weights_.sum(), 1.0, rtol=1e-12)
    assert gm.means_.shape == (K, D)
    assert gm.covariances_.shape == shape
    assert gm.precisions_.shape == shape
    assert gm.precisions_cholesky_.shape == shape
    assert gm.n_features_in_ == D
    # the same shapes as scikit-learn's fit of the same model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGaussianMixture(K, covariance_type=covariance_type, max_iter=2, random_state=0).fit(X)
    for name in ARRAY_ATTRIBUTES:
        assert getattr(gm, name).shape == getattr(sk, name).shape, name


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_are_inverse_covariances(X, covariance_type):
    gm = GaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(X)
    cov, prec, chol = gm.covariances_, gm.precisions_, gm.precisions_cholesky_
    if covariance_type in ("full", "tied"):
        np.testing.assert_allclose(prec, np.linalg.inv(cov), rtol=1e-8, atol=1e-8 * np.abs(prec).max())
        np.testing.assert_allclose(chol @ np.swapaxes(chol, -1, -2), prec, rtol=1e-8, atol=1e-10)
        np.testing.assert_array_equal(chol, np.triu(chol))  # upper triangular, as in scikit-learn
        np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-12, atol=1e-12)
        assert (np.linalg.eigvalsh(cov) > 0).all()
    else:
        np.testing.assert_allclose(prec, 1.0 / cov, rtol=1e-8)
        np.testing.assert_allclose(chol**2, prec, rtol=1e-8)
        assert (cov > 0).all()


def test_lower_bound_attributes(X):
    n_init = 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(K, n_init=n_init, init_params="random", random_state=0).fit(X)
    assert gm.init_lower_bounds_.shape == (n_init,)
    assert np.isfinite(gm.init_lower_bounds_).all()
    assert gm.lower_bound_ == gm.init_lower_bounds_.max()
    assert gm.init_converged_.shape == (n_init,) and gm.init_converged_.dtype == bool
    assert gm.converged_ == gm.init_converged_[np.argmax(gm.init_lower_bounds_)]
    assert len(gm.lower_bounds_) == gm.n_iter_ >= 1
    assert gm.lower_bounds_[-1] == gm.lower_bound_
    # EM does not decrease the likelihood (up to the effect of reg_covar)
    assert (np.diff(gm.lower_bounds_) > -1e-6).all()
    # the lower bound is the mean log-likelihood of the parameters before the last M-step, close to score
    assert gm.score(X) >= gm.lower_bound_ - 1e-6
    assert gm.score(X) - gm.lower_bound_ < 10 * gm.tol


def test_n_iter_and_converged(X):
    gm = GaussianMixture(K, tol=1e-3, random_state=0).fit(X)
    assert gm.converged_ and 1 <= gm.n_iter_ < gm.max_iter
    assert abs(gm.lower_bounds_[-1] - gm.lower_bounds_[-2]) < gm.tol
    assert all(abs(b - a) >= gm.tol for a, b in zip(gm.lower_bounds_[:-2], gm.lower_bounds_[1:-1], strict=True))


# ------------------------------------------------------------------------------------- warm start


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_warm_start_matches_sklearn(X, covariance_type):
    rng = np.random.default_rng(1)
    precisions = identity_precisions(covariance_type, K, D)
    kwargs = dict(
        covariance_type=covariance_type,
        weights_init=np.full(K, 1 / K),
        means_init=X[rng.choice(len(X), K, replace=False)],
        precisions_init=precisions,
        warm_start=True,
        max_iter=2,
        tol=0.0,
    )
    ours, theirs = GaussianMixture(K, **kwargs), SkGaussianMixture(K, **kwargs)
    once = GaussianMixture(K, **{**kwargs, "warm_start": False, "max_iter": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(X)
        theirs.fit(X)
        first_bounds = list(ours.lower_bounds_)
        ours.fit(X)
        theirs.fit(X)
        once.fit(X)
    assert ours.n_iter_ == theirs.n_iter_ == 2
    assert ours.converged_ is False
    assert ours.lower_bound_ == pytest.approx(theirs.lower_bound_, rel=1e-10)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=1e-10)
    for name in ARRAY_ATTRIBUTES:
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-6, atol=1e-12, err_msg=name)
        # two warm fits of 2 iterations continue where the first stopped: one fit of 4 iterations
        np.testing.assert_allclose(getattr(ours, name), getattr(once, name), rtol=1e-6, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(first_bounds + ours.lower_bounds_, once.lower_bounds_, rtol=1e-10)


def test_warm_start_after_convergence_measures_change_from_previous_bound(X):
    """As in scikit-learn, a warm fit's first change is measured from the previous ``lower_bound_``."""
    ours = GaussianMixture(K, warm_start=True, tol=1e-3, random_state=0).fit(X)
    previous = ours.lower_bound_
    ours.fit(X)
    assert ours.n_iter_ == 1 and ours.converged_
    assert ours.lower_bound_ == pytest.approx(previous, abs=1e-3)
    assert ours.init_lower_bounds_.shape == (1,)  # a warm fit runs one restart
    theirs = SkGaussianMixture(K, warm_start=True, tol=1e-3, random_state=0).fit(X)
    theirs.fit(X)
    assert theirs.n_iter_ == ours.n_iter_ and theirs.converged_


def test_warm_start_false_restarts_from_scratch(X):
    kwargs = dict(max_iter=2, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        twice = GaussianMixture(K, **kwargs)
        twice.fit(X)
        twice.fit(X)
        fresh = GaussianMixture(K, **kwargs).fit(X)
    for name in ARRAY_ATTRIBUTES:
        np.testing.assert_array_equal(getattr(twice, name), getattr(fresh, name), err_msg=name)


# ---------------------------------------------------------------------------------------- verbose


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_prints_progress(X, capsys, verbose):
    gm = GaussianMixture(K, n_init=2, max_iter=5, tol=0.0, verbose=verbose, verbose_interval=1, random_state=0)
    with pytest.warns(ConvergenceWarning):
        gm.fit(X)
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"EM on 2 of 2 restarts, 180 rows, device cpu, torch\.float64", lines[0])
    iterations = [line for line in lines if line.strip().startswith("Iteration")]
    assert [int(line.split()[1]) for line in iterations] == [1, 2, 3, 4, 5]
    assert all("best lower bound" in line for line in iterations)
    assert all(("time" in line) == (verbose > 1) for line in iterations)
    assert re.match(r"EM done: 0 converged, 0 failed, 0 repaired, 2 stopped at max_iter", lines[-1])


def test_verbose_interval(X, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        GaussianMixture(K, max_iter=6, tol=0.0, verbose=1, verbose_interval=3, random_state=0).fit(X)
    iterations = [line for line in capsys.readouterr().out.splitlines() if "Iteration" in line]
    assert [int(line.split()[1]) for line in iterations] == [3, 6]


def test_silent_by_default(X, capsys):
    GaussianMixture(K, random_state=0).fit(X)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "precision, covariance_type, seen_inside",
    [
        ("high", "full", "high"),
        ("medium", "tied", "medium"),
        ("high", "diag", "highest"),
        ("high", "spherical", "highest"),
    ],
)
def test_matmul_precision_is_scoped_to_the_call(precision, covariance_type, seen_inside, monkeypatch):
    """The setting holds inside fit and predict (full and tied only) and torch's own comes back after."""
    import torchgmm.passes
    import torchgmm.trainer

    seen = []

    def spy(module, name):
        original = getattr(module, name)

        def wrapped(*args, **kwargs):
            seen.append((name, torch.get_float32_matmul_precision()))
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    spy(torchgmm.trainer, "e_step")
    spy(torchgmm.passes, "estimate_log_prob_resp")
    X, _ = make_blobs(120, 2, 2, 5.0, seed=3)
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0, matmul_precision=precision)
    labels = gm.fit_predict(X)
    assert torch.get_float32_matmul_precision() == "highest"
    np.testing.assert_array_equal(gm.predict(X), labels)
    assert torch.get_float32_matmul_precision() == "highest"
    assert {name for name, _ in seen} == {"e_step", "estimate_log_prob_resp"}
    assert {p for _, p in seen} == {seen_inside}


@pytest.mark.parametrize("as_tensor", [False, True])
def test_inference_outputs_take_the_input_dtype(X, as_tensor):
    """A float32 model scoring float64 rows returns float64 (computed in float64), float32 rows float32."""
    model = GaussianMixture(K, random_state=0).fit(X.astype(np.float32))
    assert model.means_.dtype == np.float32

    def rows(wide: bool):
        return (
            torch.as_tensor(X, dtype=torch.float64 if wide else torch.float32)
            if as_tensor
            else (X if wide else X.astype(np.float32))
        )

    for wide in (True, False):
        expected = (torch.float64 if wide else torch.float32) if as_tensor else (np.float64 if wide else np.float32)
        assert model.predict_proba(rows(wide)).dtype == expected
        assert model.score_samples(rows(wide)).dtype == expected
        assert model.predict(rows(wide)).dtype in (np.int64, torch.int64)
    # the same model: float64 rows are scored as precisely as the float32 parameters allow
    np.testing.assert_allclose(
        np.asarray(model.score_samples(rows(True))), np.asarray(model.score_samples(rows(False))), rtol=1e-5, atol=1e-5
    )
    # an explicit dtype wins
    assert GaussianMixture(K, random_state=0, dtype="float32").fit(X).score_samples(X).dtype == np.float32
