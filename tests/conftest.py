"""Shared fixtures: small seeded data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]

# Every attribute fit sets: a failed fit must leave none of them behind.
FITTED_ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "converged_",
    "n_iter_",
    "lower_bound_",
    "lower_bounds_",
    "init_lower_bounds_",
    "init_converged_",
    "n_features_in_",
)


def make_blobs(n_per: int = 150, n_features: int = 3, n_components: int = 3, spread: float = 6.0, seed: int = 0):
    """Gaussian blobs with random covariances; returns ``(X, labels)`` in float64."""
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for k in range(n_components):
        centre = rng.normal(0, spread, n_features)
        A = rng.normal(0, 1, (n_features, n_features)) / np.sqrt(n_features)
        parts.append(centre + rng.normal(0, 1, (n_per, n_features)) @ (A + 0.5 * np.eye(n_features)))
        labels.append(np.full(n_per, k))
    perm = rng.permutation(n_per * n_components)
    return np.concatenate(parts)[perm], np.concatenate(labels)[perm]


def identity_precisions(covariance_type: str, n_components: int, n_features: int) -> np.ndarray:
    """Identity precisions in the shape ``precisions_init`` takes for ``covariance_type``."""
    return {
        "full": np.stack([np.eye(n_features)] * n_components),
        "tied": np.eye(n_features),
        "diag": np.ones((n_components, n_features)),
        "spherical": np.ones(n_components),
    }[covariance_type]


_CACHES = {"__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache"}


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name not in _CACHES}


@pytest.fixture(autouse=True, scope="session")
def _checkout_stays_clean():
    """No test may write into the checkout (a model file from a command run in the working directory, say)."""
    root = Path(__file__).resolve().parent.parent
    before = {folder: _entries(folder) for folder in (root, root / "tests")}
    yield
    for folder, entries in before.items():
        new = sorted(_entries(folder) - entries)
        assert not new, f"the tests left {new} in {folder}"


@pytest.fixture(autouse=True)
def _single_thread_determinism():
    torch.manual_seed(0)
    yield


@pytest.fixture
def working_dtypes(monkeypatch):
    """Every dtype :func:`torchgmm.em.working_dtype` chose while the test ran, one per pass, in order.

    A float32 pass that falls back to float64 is still accurate, so accuracy tests of float32 alone cannot tell
    whether float32 arithmetic was really tested; this can.
    """
    import torchgmm.em
    import torchgmm.estimator

    chosen = []
    original = torchgmm.em.working_dtype

    def recording(params, covariance):
        dtype = original(params, covariance)
        chosen.append(dtype)
        return dtype

    monkeypatch.setattr(torchgmm.em, "working_dtype", recording)
    monkeypatch.setattr(torchgmm.estimator, "working_dtype", recording)
    return chosen


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def dense_covariances(gm):
    """Each component's covariance as a dense (K, D, D) NumPy array."""
    cov = np.asarray(gm.covariances_, dtype=np.float64)
    k, d = np.asarray(gm.means_).shape
    if gm.covariance_type == "full":
        return cov
    if gm.covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if gm.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)
