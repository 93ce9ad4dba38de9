"""init_whiten: k-means seeding on whitened rows, invariant to the features' units and robust to a dominant
noisy feature; off by default (scikit-learn's seeding)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from torchgmm import ConvergenceWarning, GaussianMixture


def _two_clusters(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Two clusters apart along feature 0; feature 1 is pure noise a thousand times wider."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    X = np.column_stack([np.where(labels == 1, 3.0, -3.0) + rng.normal(0, 0.5, n), rng.normal(0, 1000.0, n)])
    return X, labels


def _initial(X: np.ndarray, **params) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(max_iter=0, random_state=0, **params).fit(X)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_whitened_seeding_does_not_depend_on_the_features_units(init_params):
    X, _ = _two_clusters()
    scale = np.array([10.0, 0.01])  # variances stay far above reg_covar
    params = dict(n_components=2, n_init=3, init_params=init_params, init_whiten=True)
    plain, scaled = _initial(X, **params), _initial(X * scale, **params)
    np.testing.assert_allclose(scaled.means_, plain.means_ * scale, rtol=1e-8)
    np.testing.assert_allclose(scaled.weights_, plain.weights_, rtol=1e-10)


def test_whitened_kmeans_finds_clusters_a_wide_noisy_feature_hides():
    X, labels = _two_clusters(1)
    raw = _initial(X, n_components=2, n_init=4)
    white = _initial(X, n_components=2, n_init=4, init_whiten=True)
    # scikit-learn's seeding splits along the wide noise; the whitened one along the clusters
    assert adjusted_rand_score(labels, raw.predict(X)) < 0.2
    assert adjusted_rand_score(labels, white.predict(X)) > 0.95
    np.testing.assert_allclose(np.sort(white.means_[:, 0]), [-3.0, 3.0], atol=0.2)


def test_the_default_is_scikit_learns_seeding():
    X, _ = _two_clusters(2)
    default, explicit = _initial(X, n_components=2, n_init=2), _initial(X, n_components=2, n_init=2, init_whiten=False)
    np.testing.assert_array_equal(default.means_, explicit.means_)
    assert GaussianMixture().init_whiten is False
