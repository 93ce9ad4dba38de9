"""Initialisation against NumPy references written here from the formulas.

* Greedy k-means++ (Arthur and Vassilvitskii 2007, the variant scikit-learn uses: each new seed is the best
  of ``2 + log K`` candidates drawn in proportion to the squared distance to the closest seed), given the same
  random draws as :func:`torchgmm.init.kmeans_plusplus` takes from its generator.
* Batched Lloyd iterations with scikit-learn's stopping rule (squared Frobenius move of all centres at most
  ``tol`` times the mean feature variance), on data whose Lloyd iterations stop by that rule before the
  assignments settle, so both the refinement and its tolerance are visible.
* ``init_params='kmeans'`` end to end: the estimator's initial means with ``max_iter=0`` are the cluster means
  of the reference Lloyd centres refined from the reference seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_blobs

from torchgmm import GaussianMixture
from torchgmm._validation import make_generator
from torchgmm.data import scanned
from torchgmm.init import _sample, initial_responsibilities, kmeans, kmeans_plusplus

# ------------------------------------------------------------------------------------------ NumPy references


def reference_kmeans_plusplus(X: np.ndarray, n_clusters: int, n_restarts: int, generator: torch.Generator):
    """Greedy k-means++ seeds ``[R, K]`` (row indices), drawing from ``generator`` as the library does.

    Draws, in order: the first seed of every restart (uniform row indices), then for each further seed a
    ``[R, trials]`` float64 uniform matrix. Everything else is NumPy.
    """
    M = len(X)
    trials = 2 + int(math.log(n_clusters))
    seeds = np.empty((n_restarts, n_clusters), dtype=np.int64)
    seeds[:, 0] = torch.randint(M, (n_restarts,), generator=generator).numpy()
    closest = np.stack([((X - X[seeds[r, 0]]) ** 2).sum(1) for r in range(n_restarts)])  # [R, M]
    for c in range(1, n_clusters):
        uniforms = torch.rand(n_restarts, trials, generator=generator, dtype=torch.float64).numpy()
        for r in range(n_restarts):
            cumulative = np.cumsum(closest[r])
            candidates = np.minimum(np.searchsorted(cumulative, uniforms[r] * cumulative[-1], side="right"), M - 1)
            # the potential (sum of squared distances to the closest seed) if each candidate were added
            distances = np.minimum(((X[None] - X[candidates][:, None]) ** 2).sum(-1), closest[r])
            best = int(np.argmin(distances.sum(1)))
            seeds[r, c] = candidates[best]
            closest[r] = distances[best]
    return seeds


def reference_lloyd(X: np.ndarray, centres: np.ndarray, max_iter: int = 100, tol: float = 1e-4):
    """Lloyd iterations per restart from ``centres [R, K, D]``; returns ``(centres, iterations, last move)``.

    Stops once the squared Frobenius norm of a restart's move is at most ``tol * mean(var(X))`` (scikit-learn's
    rule; all restarts must satisfy it, as they run as one batch). The test data never empty a cluster.
    """
    tol_abs = tol * X.var(0).mean()
    centres = centres.copy()
    for iteration in range(1, max_iter + 1):
        new = np.empty_like(centres)
        for r in range(len(centres)):
            labels = ((X[:, None, :] - centres[r][None]) ** 2).sum(-1).argmin(1)
            assert len(np.unique(labels)) == centres.shape[1], "the reference does not relocate empty clusters"
            new[r] = np.stack([X[labels == k].mean(0) for k in range(centres.shape[1])])
        moved = ((new - centres) ** 2).sum((1, 2))
        centres = new
        if (moved <= tol_abs).all():
            return centres, iteration, moved
    return centres, max_iter, moved


def _overlapping(seed: int = 0, scale: float = 1e3) -> np.ndarray:
    """Anisotropic, overlapping, unequal clusters (Lloyd moves slowly on them), at a large scale, float64."""
    rng = np.random.default_rng(seed)
    sizes = (300, 180, 90)
    parts = [
        rng.normal(size=(n, 3)) @ rng.normal(size=(3, 3)) + rng.normal(0.0, 1.2, 3) for n in sizes
    ]  # centres about one spread apart
    return scale * np.concatenate(parts)[rng.permutation(sum(sizes))] + 5e3


# ------------------------------------------------------------------------------------------------ k-means++


@pytest.mark.parametrize("n_clusters", [2, 5, 9])
def test_kmeans_plusplus_matches_the_reference(n_clusters):
    X = _overlapping(seed=n_clusters)
    data = scanned(torch.as_tensor(X))
    rows = torch.cat([x for _, x in data.chunks(len(X))])
    got = kmeans_plusplus(rows, n_clusters, 4, torch.Generator().manual_seed(n_clusters))
    expected = reference_kmeans_plusplus(rows.numpy(), n_clusters, 4, torch.Generator().manual_seed(n_clusters))
    np.testing.assert_array_equal(got.numpy(), expected)
    assert all(len(set(seeds)) == n_clusters for seeds in expected.tolist())  # distinct rows


# ---------------------------------------------------------------------------------------------------- Lloyd


def test_lloyd_matches_the_reference_and_stops_by_its_tolerance():
    X = _overlapping(seed=5)
    data = scanned(torch.as_tensor(X))
    centred = X - X.mean(0)
    rng = np.random.default_rng(1)
    starts = np.stack([centred[rng.choice(len(X), 3, replace=False)] for _ in range(4)])  # [R=4, K=3, D]
    got = kmeans(data, torch.as_tensor(starts), rows=128).numpy()
    expected, iterations, _ = reference_lloyd(centred, starts)
    # the fixture has teeth: the tolerance stops Lloyd (16 iterations) well before it settles (31), far away
    settled, more, _ = reference_lloyd(centred, starts, tol=0.0)
    assert iterations >= 4 and more > iterations, (iterations, more)
    assert np.abs(settled - expected).max() > 1e-2 * np.abs(centred).max()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9 * np.abs(centred).max())
    assert np.abs(got - starts).max() > 0.1 * X.std()  # refined, not the seeds


def test_lloyd_relocates_an_emptied_cluster_to_the_farthest_row():
    X, _ = make_blobs(60, 2, 2, 8.0, seed=2)
    data = scanned(torch.as_tensor(X))
    centred = X - X.mean(0)
    far = centred.max(0) + 1e3  # a centre no row is closest to
    starts = np.stack([centred[0], centred[1], far])[None]
    got = kmeans(data, torch.as_tensor(starts), max_iter=1).numpy()[0]
    labels = ((centred[:, None] - starts[0][None, :2]) ** 2).sum(-1).argmin(1)
    means = np.stack([centred[labels == k].mean(0) for k in range(2)])
    farthest = centred[((centred[:, None] - means[None]) ** 2).sum(-1).min(1).argmax()]
    np.testing.assert_allclose(got, np.stack([*means, farthest]), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_kmeans_initialisation_end_to_end(covariance_type):
    """GaussianMixture(init_params='kmeans', max_iter=0): means of the rows closest to the reference centres."""
    X = _overlapping(seed=3, scale=1.0)
    K, R, seed = 3, 2, 21
    gm = GaussianMixture(K, covariance_type=covariance_type, n_init=R, max_iter=0, random_state=seed).fit(X)

    # the estimator's draws: its generator, the seeding sample (tested in test_sources), then k-means++
    data = scanned(torch.as_tensor(X))
    generator = make_generator(seed, torch.device("cpu"))
    sample = _sample(data, K, R, generator).numpy()
    seeds = sample[reference_kmeans_plusplus(sample, K, R, generator)]
    centred = X - X.mean(0)
    centres, iterations, _ = reference_lloyd(centred, seeds)
    assert iterations >= 2
    # max_iter=0 leaves every bound at -inf, and ties keep the first restart
    labels = ((centred[:, None] - centres[0][None]) ** 2).sum(-1).argmin(1)
    expected = np.stack([X[labels == k].mean(0) for k in range(K)])
    np.testing.assert_allclose(gm.means_, expected, rtol=1e-9)
    np.testing.assert_allclose(gm.weights_, np.bincount(labels, minlength=K) / len(X), rtol=1e-9)

    # the same draws through initial_responsibilities give the reference centres of every restart
    generator = make_generator(seed, torch.device("cpu"))
    _, got = initial_responsibilities("kmeans", data, K, R, generator)
    np.testing.assert_allclose(got.numpy(), centres, rtol=1e-9, atol=1e-9)
