"""fixed_params: parameters held at their initial values, against a constrained EM written in NumPy.

The held values must come back bit for bit, the free ones must follow the constrained M-step (covariances about
the held means, means and covariances under held weights), and the lower bound must still rise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from torchgmm import ConvergenceWarning, DegenerateComponentWarning, GaussianMixture

CENTRES = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
SHAPES = [np.array([[1.0, 0.5], [0.0, 0.5]]), np.array([[0.3, 0.0], [0.2, 1.2]]), np.eye(2) * 0.7]


def _mixture(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([c + rng.normal(size=(n, 2)) @ a for c, a in zip(CENTRES, SHAPES, strict=True)])


def _numpy_em(X, weights, means, covariances, fixed, tol, max_iter, reg):
    """EM with full covariances and the named parameters held, from the formulas (float64 NumPy)."""
    history, bound = [], -np.inf
    for _ in range(max_iter):
        log_prob = np.log(weights) + np.stack(
            [multivariate_normal(means[k], covariances[k]).logpdf(X) for k in range(len(weights))], axis=1
        )
        norm = logsumexp(log_prob, axis=1)
        resp = np.exp(log_prob - norm[:, None])
        history.append(norm.mean())
        nk = resp.sum(0) + 10 * np.finfo(np.float64).eps
        if "means" not in fixed:
            means = resp.T @ X / nk[:, None]
        if "covariances" not in fixed:
            covariances = np.stack(
                [(resp[:, k, None] * (X - means[k])).T @ (X - means[k]) / nk[k] + reg * np.eye(2) for k in range(3)]
            )
        if "weights" not in fixed:
            weights = nk / nk.sum()
        if abs(history[-1] - bound) < tol:
            break
        bound = history[-1]
    return history, weights, means, covariances


@pytest.mark.parametrize("fixed", [("means",), ("weights",), ("weights", "means"), ("covariances",)])
def test_a_fit_with_held_parameters_follows_constrained_em_in_numpy(fixed):
    X = _mixture()
    rng = np.random.default_rng(1)
    weights = np.array([0.5, 0.3, 0.2])
    means = CENTRES + rng.normal(0, 0.5, CENTRES.shape)
    covariances = np.stack([np.eye(2) * s for s in (0.5, 1.0, 2.0)])
    tol, reg = 1e-9, 1e-6
    history, w, m, c = _numpy_em(X, weights, means, covariances, fixed, tol, 300, reg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(
            3,
            tol=tol,
            reg_covar=reg,
            max_iter=300,
            weights_init=weights,
            means_init=means,
            precisions_init=np.linalg.inv(covariances),
            fixed_params=fixed,
        ).fit(X)
    np.testing.assert_allclose(gm.lower_bounds_, history, rtol=1e-10)
    assert gm.n_iter_ == len(history)
    np.testing.assert_allclose(gm.weights_, w, rtol=1e-8)
    np.testing.assert_allclose(gm.means_, m, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gm.covariances_, c, rtol=1e-8, atol=1e-10)
    assert np.all(np.diff(gm.lower_bounds_) > -1e-12)  # the constrained M-step still raises the bound


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_held_values_come_back_bit_for_bit(covariance_type):
    X = _mixture(200)
    K = 4
    means = np.concatenate([CENTRES, [[40.0, 40.0]]])  # far from every row: empty, and never re-seeded
    precisions = {
        "full": np.stack([np.eye(2) * p for p in (1.0, 2.0, 0.5, 1.5)]),
        "tied": np.array([[1.2, 0.1], [0.1, 0.8]]),
        "diag": np.array([[1.0, 2.0], [0.5, 0.5], [2.0, 1.0], [1.0, 1.0]]),
        "spherical": np.array([1.0, 0.5, 2.0, 1.5]),
    }[covariance_type]
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    common = dict(covariance_type=covariance_type, n_init=3, random_state=0, max_iter=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, DegenerateComponentWarning))
        held = GaussianMixture(K, means_init=means, weights_init=weights, fixed_params="wm", **common).fit(X)
        np.testing.assert_array_equal(held.means_, means)
        np.testing.assert_array_equal(held.weights_, weights)
        uniform = GaussianMixture(K, means_init=means, fixed_params=["weights"], **common).fit(X)
        np.testing.assert_array_equal(uniform.weights_, np.full(K, 0.25))
        everything = GaussianMixture(
            K, means_init=means, weights_init=weights, precisions_init=precisions, fixed_params="wmc", **common
        ).fit(X)
    np.testing.assert_array_equal(everything.precisions_, precisions)
    np.testing.assert_array_equal(everything.means_, means)
    # nothing moves: the bound of every iteration is the first one, and it converges on the second
    assert everything.n_iter_ == 2 and everything.converged_
    assert everything.lower_bounds_[0] == everything.lower_bounds_[1]
    assert np.all(everything.init_lower_bounds_ == everything.lower_bound_)  # every restart holds the same values


def test_means_held_at_the_true_centres_recover_the_covariances():
    X = _mixture(3000, seed=2)
    gm = GaussianMixture(3, means_init=CENTRES, fixed_params=["means"], tol=1e-8, max_iter=500, random_state=0).fit(X)
    for k, a in enumerate(SHAPES):
        np.testing.assert_allclose(gm.covariances_[k], a.T @ a, atol=0.06)
    np.testing.assert_array_equal(gm.means_, CENTRES)


def test_chunked_data_hold_the_same_values():
    X = _mixture(300)
    params = dict(n_components=3, means_init=CENTRES, fixed_params="m", random_state=0, tol=1e-8)
    whole = GaussianMixture(**params).fit(X)
    chunked = GaussianMixture(batch_size=97, **params).fit(X)
    np.testing.assert_allclose(chunked.lower_bounds_, whole.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(chunked.covariances_, whole.covariances_, rtol=1e-9)
    np.testing.assert_array_equal(chunked.means_, CENTRES)


def test_online_updates_hold_the_values():
    X = _mixture(300)
    gm = GaussianMixture(3, means_init=CENTRES, fixed_params=("means", "weights"), random_state=0)
    order = np.random.default_rng(0).permutation(len(X))
    for batch in np.array_split(X[order], 6):
        gm.partial_fit(batch)
        np.testing.assert_array_equal(gm.means_, CENTRES)
        np.testing.assert_array_equal(gm.weights_, np.full(3, 1 / 3))
    free = GaussianMixture(3, means_init=CENTRES, random_state=0).partial_fit(X[order][:50])
    assert not np.array_equal(free.means_, CENTRES)  # without fixed_params the means move


def test_the_module_holds_its_parameters_in_partial_fit():
    import torch

    from torchgmm import GaussianMixtureModule

    X = torch.as_tensor(_mixture(200))
    weights, means = torch.full((3,), 1 / 3, dtype=torch.float64), torch.as_tensor(CENTRES)
    covariances = torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    held = GaussianMixtureModule.from_covariances(weights, means, covariances, fixed_params="m")
    free = GaussianMixtureModule.from_covariances(weights, means, covariances)
    estimator = GaussianMixture(
        3,
        means_init=CENTRES,
        weights_init=weights.numpy(),
        precisions_init=np.linalg.inv(covariances.numpy()),
        fixed_params="m",
    )
    for batch in X.split(100):
        held.partial_fit(batch)
        free.partial_fit(batch)
        estimator.partial_fit(batch.numpy())
        assert torch.equal(held.means, means)
    assert not torch.equal(free.means, means)
    # the module and the estimator take the same constrained steps
    np.testing.assert_allclose(held.weights.numpy(), estimator.weights_, rtol=1e-10)
    scale = held.scale_tril().detach()
    np.testing.assert_allclose((scale @ scale.mT).numpy(), estimator.covariances_, rtol=1e-10)
    with pytest.raises(ValueError, match="Invalid letter 'q' in 'fixed_params'"):
        GaussianMixtureModule.from_covariances(weights, means, covariances, fixed_params="q")


def test_an_empty_component_with_held_mean_and_weight_is_regularised_not_reseeded():
    X = _mixture(200)
    means = np.concatenate([CENTRES, [[40.0, 40.0]]])  # holds no row: its covariance about the held mean is 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, DegenerateComponentWarning))
        gm = GaussianMixture(4, means_init=means, fixed_params="wm", reg_covar=0.0, random_state=0).fit(X)
        free = GaussianMixture(4, means_init=means, reg_covar=0.0, random_state=0).fit(X)
    kinds = {repair.action for repair in gm.repairs_}
    assert kinds == {"regularised"}, gm.repairs_  # re-seeding would move the held mean and weight
    assert "reseeded" in {repair.action for repair in free.repairs_}  # as it does when they are free
    np.testing.assert_array_equal(gm.means_, means)
    assert np.all(np.diff(gm.lower_bounds_) > -1e-9)
