"""Shared fixtures: small seeded data sets."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Without a GPU, Triton kernels run in its CPU interpreter; the choice is made when torchgmm.fused is imported
# (Triton decides at decoration time), so before torchgmm is.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Every attribute fit sets (the library's one schema): a failed fit must leave none of them behind.
from torchgmm.model import FITTED_ATTRIBUTES

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def attribute_values(estimator) -> dict:
    """Deep copies of every fitted attribute the estimator has (arrays, tensors, lists of bounds and repairs)."""
    return {name: copy.deepcopy(getattr(estimator, name)) for name in FITTED_ATTRIBUTES if hasattr(estimator, name)}


def assert_same_attributes(before: dict, after: dict) -> None:
    """Two :func:`attribute_values` snapshots hold exactly the same values."""
    assert before.keys() == after.keys()
    for name, value in before.items():
        other = after[name]
        if isinstance(value, (np.ndarray, torch.Tensor)):
            np.testing.assert_array_equal(np.asarray(other), np.asarray(value), err_msg=name)
        else:
            assert other == value, name


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
    import torchgmm.passes

    chosen = []
    original = torchgmm.passes.working_dtype

    def recording(params, covariance):
        dtype = original(params, covariance)
        chosen.append(dtype)
        return dtype

    monkeypatch.setattr(torchgmm.passes, "working_dtype", recording)
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


def run_restarts(data, params, covariance, *, tol, reg_covar, max_iter, ok=None, rows=None, lower_bound=None):
    """The EM loop (``torchgmm.trainer.run_em``) on ``params`` of R restarts from a fresh state at ``reg_covar``."""
    import math

    from torchgmm.mstep import RepairState
    from torchgmm.trainer import EMConfig, EMState, run_em

    R, K = params.means.shape[:2]
    repairs = RepairState.start(R, K, covariance, reg_covar, params.means.device)
    state = EMState.start(params, repairs, ok, -math.inf if lower_bound is None else lower_bound)
    return run_em(data, state, EMConfig(covariance, tol, max_iter, rows))


def initial(method, data, n_components, n_restarts, covariance, reg_covar, generator, rows=None):
    """``torchgmm.init.initialize`` from a fresh repair state at ``reg_covar``: ``(params, ok)``."""
    from torchgmm.init import initialize
    from torchgmm.mstep import RepairState

    state = RepairState.start(n_restarts, n_components, covariance, reg_covar, data.device)
    return initialize(method, data, n_components, n_restarts, covariance, generator, state, rows)


def interrupt_iteration(monkeypatch, at: int = 1) -> None:
    """Make the EM loop's ``at``-th iteration (counted from now, over every fit) raise ``KeyboardInterrupt``, as
    Ctrl-C would; the iterations before it run as usual. ``monkeypatch`` undoes it at the test's end."""
    from torchgmm import trainer

    iterate, calls = trainer._iterate, [0]

    def interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == at:
            raise KeyboardInterrupt
        return iterate(*args, **kwargs)

    monkeypatch.setattr(trainer, "_iterate", interrupted)
