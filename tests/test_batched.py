"""Restarts run as one batch behave exactly as if each ran alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, initial, make_blobs, run_restarts

from torchgmm import GaussianMixture
from torchgmm.covariance import get_covariance_type
from torchgmm.data import scanned
from torchgmm.trainer import EMConfig, run_em


def _data(seed=0, dtype=torch.float64):
    X, _ = make_blobs(120, 3, 4, 2.5, seed=seed)
    data = scanned(torch.as_tensor(X), dtype)
    return data


def _assert_restart_equal(batched, r, single, s=0):
    """Restart ``r`` of one EM result equals restart ``s`` of another."""
    assert batched.n_iter[r] == single.n_iter[s]
    assert batched.converged[r] == single.converged[s]
    np.testing.assert_allclose(batched.lower_bounds[r], single.lower_bounds[s], rtol=1e-10)
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        a, b = getattr(batched.params, name), getattr(single.params, name)
        torch.testing.assert_close(a[r], b[s], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", ["random", "kmeans"])
def test_batched_equals_sequential(covariance_type, init_params):
    data = _data()
    covariance = get_covariance_type(covariance_type)
    generator = torch.Generator().manual_seed(4)
    params, ok = initial(init_params, data, 4, 5, covariance, 1e-6, generator)
    kwargs = dict(tol=1e-5, reg_covar=1e-6, max_iter=300)
    batched = run_restarts(data, params, covariance, ok=ok, **kwargs)
    assert not any(batched.failed)
    for r in range(5):
        single = run_restarts(data, params.select(torch.tensor([r])), covariance, **kwargs)
        _assert_restart_equal(batched, r, single)
    if init_params == "random" and covariance_type != "tied":
        # (tied random starts all stall at once on the symmetric saddle)
        # restarts stopped at different iterations, so the masking was exercised
        assert len(set(batched.n_iter)) > 1


def test_chunked_fit_equals_unchunked():
    data = _data(seed=2)
    covariance = get_covariance_type("full")
    params, ok = initial("random", data, 4, 3, covariance, 1e-6, torch.Generator().manual_seed(0))
    whole = run_restarts(data, params, covariance, tol=1e-6, reg_covar=1e-6, max_iter=100)
    chunked = run_restarts(data, params, covariance, tol=1e-6, reg_covar=1e-6, max_iter=100, rows=37)
    for r in range(3):
        _assert_restart_equal(whole, r, chunked, r)


def test_failed_restart_does_not_poison_the_others():
    data = _data(seed=1)
    covariance = get_covariance_type("full")
    params, ok = initial("kmeans", data, 4, 3, covariance, 0.0, torch.Generator().manual_seed(1))
    # Restart 1 has a non-finite precision factor: its statistics are NaN and it is dropped.
    params.precisions_cholesky[1, 2, 0, 0] = math.nan
    kwargs = dict(tol=1e-6, reg_covar=0.0, max_iter=100)
    result = run_restarts(data, params, covariance, ok=ok, **kwargs)
    assert result.failed == [False, True, False]
    assert result.lower_bound[1] == -math.inf
    assert result.best() in (0, 2)
    for r in (0, 2):
        single = run_restarts(data, params.select(torch.tensor([r])), covariance, **kwargs)
        _assert_restart_equal(result, r, single)
        assert all(math.isfinite(v) for v in result.lower_bounds[r])
        assert torch.isfinite(result.params.covariances[r]).all()


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_repaired_restart_does_not_touch_the_others(covariance_type):
    """A component far from all data empties; with reg_covar=0 it is repaired in its restart only."""
    data = _data(seed=1)
    covariance = get_covariance_type(covariance_type)
    params, ok = initial("kmeans", data, 4, 3, covariance, 0.0, torch.Generator().manual_seed(1))
    params.means[1, 0] = 1e3
    kwargs = dict(tol=1e-6, reg_covar=0.0, max_iter=100)
    result = run_restarts(data, params, covariance, ok=ok, **kwargs)
    assert not any(result.failed)
    assert result.repairs.events[0] == [] and result.repairs.events[2] == []
    if covariance.per_component:
        first = result.repairs.events[1][0]
        assert (first.iteration, first.component, first.action) == (1, 0, "reseeded")
    else:  # the shared covariance does not degenerate with one empty component
        assert result.repairs.events[1] == []
    for r in (0, 2):
        single = run_restarts(data, params.select(torch.tensor([r])), covariance, **kwargs)
        _assert_restart_equal(result, r, single)
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        assert torch.isfinite(getattr(result.params, name)).all()


def _far_component(params, restart=0, component=0):
    """``params`` with one component moved a thousand standard deviations away: its next M-step is empty."""
    params.means[restart, component] = 1e3
    return params


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_no_convergence_on_a_repair_or_the_iteration_after(covariance_type):
    """With a huge tol every finite change counts as converged, so only the repair guard keeps a restart going.

    The bound after iteration ``t`` is that of the parameters before its M-step; a repair at ``t`` changes the
    parameters scored at ``t + 1``, so neither the change at ``t`` nor at ``t + 1`` may end the restart.
    """
    data = _data(seed=1)
    covariance = get_covariance_type(covariance_type)
    kwargs = dict(tol=1e9, reg_covar=0.0, max_iter=20)
    # Repaired at iteration 1: iteration 1 changes from -inf, iteration 2 is the one after; it ends at 3.
    params, ok = initial("kmeans", data, 4, 2, covariance, 0.0, torch.Generator().manual_seed(1))
    result = run_restarts(data, _far_component(params), covariance, ok=ok, **kwargs)
    assert [e.iteration for e in result.repairs.events[0]] == [1]
    assert result.repairs.events[1] == []
    assert (result.n_iter, result.converged) == ([3, 2], [True, True])
    # Repaired at iteration 2 (after a healthy first iteration): neither 2 nor 3 counts; it ends at 4.
    params, ok = initial("kmeans", data, 4, 2, covariance, 0.0, torch.Generator().manual_seed(1))
    state = run_restarts(data, params, covariance, ok=ok, **{**kwargs, "max_iter": 1})
    assert state.repairs.events == [[], []] and state.active == [0, 1]
    _far_component(state.params, restart=1)
    result = run_em(data, state, EMConfig(covariance, kwargs["tol"], kwargs["max_iter"]))
    assert result.repairs.events[0] == [] and [e.iteration for e in result.repairs.events[1]] == [2]
    assert (result.n_iter, result.converged) == ([2, 4], [True, True])


def test_estimator_keeps_best_restart():
    X, _ = make_blobs(100, 2, 5, 2.0, seed=3)
    gm = GaussianMixture(5, n_init=6, init_params="random", random_state=0, tol=1e-6, max_iter=500).fit(X)
    assert gm.init_lower_bounds_.shape == (6,)
    assert len(np.unique(gm.init_lower_bounds_.round(6))) > 1  # the restarts really differ
    np.testing.assert_allclose(gm.lower_bound_, gm.init_lower_bounds_.max())
    # the kept run is the best single restart, rerun on its own
    data = scanned(torch.as_tensor(X), torch.float64)
    covariance = get_covariance_type("full")
    singles = []
    generator = torch.Generator().manual_seed(0)
    params, ok = initial("random", data, 5, 6, covariance, 1e-6, generator)
    for r in range(6):
        alone = params.select(torch.tensor([r]))
        single = run_restarts(data, alone, covariance, tol=1e-6, reg_covar=1e-6, max_iter=500)
        singles.append(single.lower_bound[0])
    np.testing.assert_allclose(gm.init_lower_bounds_, singles, rtol=1e-10)


def test_same_random_state_same_model():
    X, _ = make_blobs(80, 3, 3, 3.0, seed=4)
    a = GaussianMixture(3, n_init=3, random_state=7).fit(X)
    b = GaussianMixture(3, n_init=3, random_state=7).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)
    np.testing.assert_allclose(a.init_lower_bounds_, b.init_lower_bounds_, rtol=1e-12)
