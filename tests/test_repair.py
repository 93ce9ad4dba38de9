"""Degenerate components are repaired per restart and per component; hostile data fit with finite parameters."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, identity_precisions, make_blobs

import torchgmm.fitter
from torchgmm import DegenerateComponentWarning, FailedRestartWarning, GaussianMixture, Repair
from torchgmm.covariance import get_covariance_type
from torchgmm.em import MixtureParameters, Statistics, solve_m_step
from torchgmm.mstep import MAX_RESEEDS, RepairState, maximise
from torchgmm.passes import working_dtype

PARAMETERS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def fit_quietly(gm: GaussianMixture, X) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateComponentWarning)
        warnings.simplefilter("ignore", torchgmm.ConvergenceWarning)
        warnings.simplefilter("error", FailedRestartWarning)
        return gm.fit(X)


def assert_finite_fit(gm: GaussianMixture, X) -> None:
    for name in PARAMETERS:
        assert np.isfinite(np.asarray(getattr(gm, name))).all(), name
    assert math.isfinite(gm.lower_bound_)
    proba = np.asarray(gm.predict_proba(X))
    assert np.isfinite(proba).all()
    # float32 rounds log-densities of a few hundred nats (D = 512) to about 1e-5
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-4 if proba.dtype == np.float32 else 1e-10)


# ----------------------------------------------------------------------------- one component, one restart


def blob_and_duplicated_outlier():
    rng = np.random.default_rng(0)
    blob = rng.normal(size=(200, 2)) @ np.array([[1.0, 0.3], [0.0, 0.5]])
    return blob, np.concatenate([blob, np.repeat([[40.0, 40.0]], 5, axis=0)])


def test_only_the_degenerate_component_is_regularised():
    """The component on 5 copies of one point gets its own reg_covar; the other keeps the exact estimate."""
    blob, X = blob_and_duplicated_outlier()
    gm = GaussianMixture(
        2,
        reg_covar=0.0,
        weights_init=[0.9, 0.1],
        means_init=[[0.0, 0.0], [40.0, 40.0]],
        precisions_init=identity_precisions("full", 2, 2),
    )
    with pytest.warns(
        DegenerateComponentWarning,
        match=r"in 1 of 1 restarts \(\d+ in the kept one, the first: component 1 regularised",
    ):
        gm.fit(X)
    assert gm.repairs_ and {(r.component, r.action) for r in gm.repairs_} == {(1, "regularised")}
    assert gm.init_repairs_ == [gm.repairs_]
    raised = gm.repairs_[-1].reg_covar
    assert raised > 0
    np.testing.assert_allclose(gm.covariances_[1], raised * np.eye(2), rtol=1e-6)
    np.testing.assert_allclose(gm.covariances_[0], np.cov(blob.T, bias=True), rtol=1e-8)
    np.testing.assert_allclose(gm.means_[1], [40.0, 40.0])
    assert_finite_fit(gm, X)


def statistics(covariance_type: str, nk, means, covariances) -> tuple[Statistics, torch.Tensor]:
    """Statistics of one restart whose M-step gives back ``means`` and ``covariances`` (about ``means``)."""
    covariance = get_covariance_type(covariance_type)
    nk = torch.tensor([nk], dtype=torch.float64)
    covariances = torch.as_tensor(covariances, dtype=torch.float64).unsqueeze(0)
    means = torch.as_tensor(means, dtype=torch.float64).unsqueeze(0)
    s2 = covariance.scatter_from_covariances(nk, covariances, 0.0, means.shape[-1])
    return Statistics(torch.zeros(1, dtype=torch.float64), nk, torch.zeros_like(means), s2), means


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_empty_component_is_reseeded_by_splitting_the_heaviest(covariance_type):
    covariance = get_covariance_type(covariance_type)
    D = 2
    shapes = {
        "full": [[[4.0, 1.0], [1.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]],
        "diag": [[4.0, 2.0], [1.0, 1.0], [0.0, 0.0]],
        "spherical": [4.0, 1.0, 0.0],
    }
    stats, means = statistics(
        covariance_type, [60.0, 30.0, 0.0], [[1.0, 2.0], [-5.0, 0.0], [9.0, 9.0]], shapes[covariance_type]
    )
    state = RepairState.start(1, 3, covariance, 0.0, means.device)
    _, ok = solve_m_step(stats, means, covariance, state.reg_covar, torch.float64)
    assert ok.tolist() == [[True, True, False]]
    step = maximise(stats, means, covariance, state, torch.tensor([0]), torch.float64, iteration=7)
    new, ok = step.params, step.ok
    assert ok == [True]
    assert state.events == [[Repair(7, 2, "reseeded", 0.0)]]
    assert state.reseeds.tolist() == [[0, 0, 1]]
    torch.testing.assert_close(new.weights[0], torch.tensor([1 / 3, 1 / 3, 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(new.covariances[0, 2], new.covariances[0, 0])
    torch.testing.assert_close(new.precisions_cholesky[0, 2], new.precisions_cholesky[0, 0])
    torch.testing.assert_close(new.means[0, 1], means[0, 1])  # untouched
    # the two halves sit half a standard deviation either side of the old mean, along the principal axis
    torch.testing.assert_close((new.means[0, 0] + new.means[0, 2]) / 2, means[0, 0])
    gap = new.means[0, 2] - new.means[0, 0]
    cov = torch.as_tensor(shapes[covariance_type], dtype=torch.float64)[0]
    if covariance_type == "full":
        dense = cov
    elif covariance_type == "diag":
        dense = torch.diag(cov)
    else:
        dense = cov * torch.eye(D, dtype=torch.float64)
    largest = torch.linalg.eigvalsh(dense)[-1]
    torch.testing.assert_close(gap @ gap, largest)
    torch.testing.assert_close(gap @ dense @ gap, largest**2)  # an eigenvector of the largest eigenvalue


def test_reseeds_are_capped_then_regularised():
    covariance = get_covariance_type("diag")
    stats, means = statistics("diag", [60.0, 0.0], [[1.0, 2.0], [9.0, 9.0]], [[4.0, 2.0], [0.0, 0.0]])
    state = RepairState.start(1, 2, covariance, 0.0, means.device)
    state.reseeds[0, 1] = MAX_RESEEDS
    _, ok = solve_m_step(stats, means, covariance, state.reg_covar, torch.float64)
    step = maximise(stats, means, covariance, state, torch.tensor([0]), torch.float64, iteration=3)
    new, ok = step.params, step.ok
    assert ok == [True]
    [event] = state.events[0]
    assert (event.component, event.action) == (1, "regularised") and event.reg_covar > 0
    assert state.reg_covar[0, 1] == event.reg_covar and state.reg_covar[0, 0] == 0.0
    torch.testing.assert_close(new.covariances[0, 1], torch.full((2,), event.reg_covar, dtype=torch.float64))


def test_regularisation_grows_tenfold_from_a_scale_of_its_own():
    """A collinear full covariance: the first raise is sqrt(eps) of its mean variance, then tenfold steps."""
    covariance = get_covariance_type("full")
    singular = [[[1e6, 1e6], [1e6, 1e6]]]
    stats, means = statistics("full", [50.0], [[0.0, 0.0]], singular)
    state = RepairState.start(1, 1, covariance, 0.0, means.device)
    _, ok = solve_m_step(stats, means, covariance, state.reg_covar, torch.float32)
    assert ok.tolist() == [[False]]
    step = maximise(stats, means, covariance, state, torch.tensor([0]), torch.float32, iteration=1)
    _, ok = step.params, step.ok
    assert ok == [True]
    first = math.sqrt(torch.finfo(torch.float32).eps) * 1e6
    ratio = state.events[0][0].reg_covar / first
    assert ratio == pytest.approx(10 ** round(math.log10(ratio)), rel=1e-6)  # first * 10**j


def test_regularisation_takes_tenfold_steps_until_it_factorises():
    """An indefinite covariance (eigenvalue about -1.5e4, as rounding can leave): reg_covar r makes its second
    squared pivot about 2 r - 3e4, so the first raise (sqrt(eps) of the mean variance, 340) and ten times it fail
    and a hundred times it is the first to factorise."""
    covariance = get_covariance_type("full")
    indefinite = [[[1e6, 1e6], [1e6, 1e6 - 3e4]]]
    stats, means = statistics("full", [50.0], [[0.0, 0.0]], indefinite)
    state = RepairState.start(1, 1, covariance, 0.0, means.device)
    _, ok = solve_m_step(stats, means, covariance, state.reg_covar, torch.float32)
    step = maximise(stats, means, covariance, state, torch.tensor([0]), torch.float32, iteration=1)
    _, ok = step.params, step.ok
    assert ok == [True]
    first = math.sqrt(torch.finfo(torch.float32).eps) * (1e6 - 1.5e4)
    [event] = state.events[0]
    assert event.reg_covar == pytest.approx(100 * first, rel=1e-6)  # (a doubling rule would give 64 first)
    assert float(state.reg_covar[0, 0]) == event.reg_covar


def test_tied_repair_names_the_shared_covariance():
    rng = np.random.default_rng(1)
    X = np.c_[rng.normal(size=(100, 2)), np.full(100, 3.0)]  # a constant feature
    gm = GaussianMixture(2, covariance_type="tied", reg_covar=0.0, random_state=0)
    with pytest.warns(DegenerateComponentWarning, match=r"the tied covariance regularised \(reg_covar [0-9.e+-]+\)"):
        gm.fit(X)
    assert all(r.component is None for r in gm.repairs_)
    assert str(gm.repairs_[0]).startswith("the tied covariance regularised")
    assert_finite_fit(gm, X)


def test_every_restart_reports_its_repairs():
    """70 copies of 0 and 30 of 10 with sharp initial components: restarts that start on one point each collapse."""
    X = np.repeat([[0.0], [10.0]], [70, 30], axis=0)
    gm = GaussianMixture(
        2,
        init_params="random_from_data",
        precisions_init=np.full((2, 1, 1), 1e4),
        reg_covar=0.0,
        n_init=8,
        random_state=0,
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        gm.fit(X)
    categories = {w.category for w in record}
    assert FailedRestartWarning not in categories
    assert len(gm.init_repairs_) == 8
    repaired = [r for r, events in enumerate(gm.init_repairs_) if events]
    assert 0 < len(repaired) < 8  # P(a restart draws one row of each value) = 0.42
    message = str(next(w.message for w in record if w.category is DegenerateComponentWarning))
    assert message.startswith(f"Degenerate components were repaired in {len(repaired)} of 8 restarts")
    assert "\n" not in message and len(message) < 300  # one short line; the details are in init_repairs_
    assert np.isfinite(gm.init_lower_bounds_).all()
    # the kept restart is the best, and its report is its own
    best = int(np.argmax(gm.init_lower_bounds_))
    assert gm.repairs_ == gm.init_repairs_[best]
    assert_finite_fit(gm, X)


def test_a_failed_restart_is_dropped_with_a_warning(monkeypatch):
    """The estimator keeps the best surviving restart and names the dropped ones."""
    original = torchgmm.fitter.initialize

    def one_fails(*args, **kwargs):
        params, ok = original(*args, **kwargs)
        params.precisions_cholesky[1] = math.nan  # NaN statistics in its first E-step
        return params, ok

    monkeypatch.setattr(torchgmm.fitter, "initialize", one_fails)
    X, _ = make_blobs(60, 2, 2, 6.0, seed=0)
    gm = GaussianMixture(2, n_init=3, random_state=0)
    with pytest.warns(FailedRestartWarning, match=r"^1 of 3 restarts were dropped .*\(restarts \[1\]\)"):
        gm.fit(X)
    assert np.isneginf(gm.init_lower_bounds_[1]) and np.isfinite(gm.init_lower_bounds_[[0, 2]]).all()
    assert_finite_fit(gm, X)


# ----------------------------------------------------------------------------- hostile data


def hostile(name: str, dtype) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(0)
    blobs, _ = make_blobs(60, 3, 3, 6.0, seed=1)
    cases = {
        "scale 1e-6": (blobs * 1e-6, 4),
        "scale 1e6": (blobs * 1e6, 4),
        "offset 1e4": (blobs + 1e4, 4),
        "clusters 1e4 apart": (np.concatenate([rng.normal(size=(60, 3)) + 1e4, rng.normal(size=(60, 3)) - 1e4]), 4),
        "mixed scales": (blobs * np.array([1e-4, 1.0, 1e5]), 4),
        "duplicated rows": (np.repeat(blobs[:6], 20, axis=0), 8),
        "constant feature": (np.c_[blobs, np.full(len(blobs), 7.0)], 4),
        "duplicated feature": (np.c_[blobs, blobs[:, :1]], 4),
        "N = K": (rng.normal(size=(6, 3)), 6),
    }
    X, K = cases[name]
    return X.astype(dtype), K


HOSTILE = [
    "scale 1e-6",
    "scale 1e6",
    "offset 1e4",
    "clusters 1e4 apart",
    "mixed scales",
    "duplicated rows",
    "constant feature",
    "duplicated feature",
    "N = K",
]


@pytest.mark.parametrize("reg_covar", [1e-6, 0.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_data_fit_with_finite_parameters(name, covariance_type, dtype, reg_covar):
    X, K = hostile(name, dtype)
    gm = GaussianMixture(K, covariance_type=covariance_type, reg_covar=reg_covar, n_init=2, max_iter=20, random_state=0)
    fit_quietly(gm, X)
    assert_finite_fit(gm, X)
    assert np.asarray(gm.means_).dtype == dtype


@pytest.mark.parametrize(
    ("N", "D", "K", "covariance_type"),
    [(600, 512, 3, "full"), (600, 512, 3, "diag"), (1024, 3, 1024, "full"), (2048, 8, 1024, "diag")],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_and_many_component_fits(N, D, K, covariance_type, dtype):
    """D = 512 with fewer rows per component than features, and K = 1024 (with N = K for full)."""
    X, _ = make_blobs(N // 4, D, 4, 6.0, seed=2)
    gm = GaussianMixture(K, covariance_type=covariance_type, init_params="random_from_data", max_iter=3, random_state=0)
    fit_quietly(gm, X.astype(dtype))
    assert_finite_fit(gm, X.astype(dtype))


# ----------------------------------------------------------------------------- float32 accuracy


def start_from(X: np.ndarray, K: int, covariance_type: str, seed: int) -> dict:
    """The same initial parameters for both dtypes: K rows as means, the data's spread as covariance."""
    rows = np.random.default_rng(seed).choice(len(X), K, replace=False)
    variance = X.var(0).mean()
    precisions = identity_precisions(covariance_type, K, X.shape[1]) / variance
    return dict(weights_init=np.full(K, 1.0 / K), means_init=X[rows], precisions_init=precisions)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_float32_reaches_the_float64_lower_bound(covariance_type, offset):
    X, _ = make_blobs(300, 4, 3, 6.0, seed=5)
    X = X + offset
    kwargs = dict(covariance_type=covariance_type, tol=1e-7, max_iter=300, **start_from(X, 3, covariance_type, 0))
    double = fit_quietly(GaussianMixture(3, **kwargs), X)
    single = fit_quietly(GaussianMixture(3, **kwargs), X.astype(np.float32))
    assert double.converged_ and single.converged_
    assert abs(single.lower_bound_ - double.lower_bound_) <= 1e-4 * abs(double.lower_bound_)
    # (the means may differ more: EM crawls along flat directions of the likelihood)
    assert (single.predict(X) == double.predict(X)).mean() > 0.99


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_tight_clusters_far_apart(covariance_type):
    """Unit clusters 2e4 apart: folded float32 densities would be off by tens of nats; the pass runs in float64."""
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(size=(200, 3)) + 1e4, rng.normal(size=(200, 3)) - 1e4])
    kwargs = dict(
        covariance_type=covariance_type,
        tol=1e-7,
        weights_init=[0.5, 0.5],
        means_init=[[1e4 + 1] * 3, [-1e4 + 1] * 3],
        precisions_init=identity_precisions(covariance_type, 2, 3),
    )
    double = fit_quietly(GaussianMixture(2, **kwargs), X)
    single = fit_quietly(GaussianMixture(2, **kwargs), X.astype(np.float32))
    assert single.repairs_ == []
    assert abs(single.lower_bound_ - double.lower_bound_) <= 1e-4 * abs(double.lower_bound_)
    # per point, both models see the same float32 points; float32 means of 1e4 are themselves rounded by 5e-4
    rounded = X[:20].astype(np.float32)
    np.testing.assert_allclose(
        single.score_samples(rounded), double.score_samples(rounded.astype(np.float64)), rtol=1e-3
    )


def test_working_dtype():
    covariance = get_covariance_type("diag")

    def params(offset: float) -> MixtureParameters:
        means = torch.tensor([[[offset, 0.0], [-offset, 0.0]]])
        ones = torch.ones(1, 2, 2)
        return MixtureParameters(torch.full((1, 2), 0.5), means, ones, ones)

    assert working_dtype(params(10.0), covariance) == torch.float32
    assert working_dtype(params(1e4), covariance) == torch.float64  # eps * 1e8 nats of rounding
    assert working_dtype(params(1e4).map(lambda t: t.double()), covariance) == torch.float64


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factorise_refuses_pivots_below_the_working_precision(covariance_type, dtype):
    """[[1, c], [c, 1]] has squared second pivot 1 - c^2: refused below max(100 eps, 1e-10), accepted above.

    A plain Cholesky accepts every positive pivot; one of a few eps is rounding noise, whose log and inverse
    made densities jitter by nats from pass to pass (see the test below).
    """
    covariance = get_covariance_type(covariance_type)
    rtol = max(100 * torch.finfo(dtype).eps, 1e-10)
    for pivot, accepted in ((0.1 * rtol, False), (0.5 * rtol, False), (2 * rtol, True), (1e3 * rtol, True)):
        c = math.sqrt(1.0 - pivot)  # in float64: its rounding moves 1 - c^2 by about 1e-16
        matrix = torch.tensor([[1.0, c], [c, 1.0]], dtype=torch.float64)
        covariances = matrix.expand(1, 3 if covariance_type == "full" else 1, 2, 2)
        factors, ok = covariance.factorise(covariances.clone(), dtype)
        assert torch.linalg.cholesky_ex(matrix).info == 0  # a plain Cholesky accepts them all
        assert ok.all().item() is accepted, (pivot, rtol)
        if not accepted:
            assert torch.isfinite(factors).all()  # a finite placeholder


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_covariance_singular_to_the_precision_is_repaired_not_used(covariance_type, seed):
    """5 rows in 5-D, 1e6 from the origin: the scatter has a null direction, so the covariance is reg_covar there.

    reg_covar=1e-6 is far below the rounding of entries of about 1e11: a covariance accepted with a pivot of a few
    eps of its diagonal made the bound of this one-component fit (a fixed point after one iteration) jump by up to
    10 nats from pass to pass. It must be repaired (its reg_covar raised) and then stay put.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(5, 5)) * 3e5 + np.random.default_rng(0).normal(size=5) * 1e6
    with pytest.warns(DegenerateComponentWarning):
        gm = GaussianMixture(1, covariance_type=covariance_type, tol=0.0, max_iter=12).fit(X)
    assert [r.action for r in gm.repairs_] == ["regularised"]
    bounds = np.asarray(gm.lower_bounds_[1:])
    assert np.ptp(bounds) <= 1e-6, bounds


def test_numerically_singular_tied_covariance_does_not_lower_the_bound():
    """Found by the property suite: a tied covariance with eigenvalues 1.5e-11 and 5.7e5 (a ratio below eps) was
    accepted, and EM then lowered the float64 bound by 0.19 nats with reg_covar=0 and no repair."""
    X = np.array(
        [[348.97445053880995, -6725.359731074812], [-879.3808235170925, -4964.061502970145], [-1e5, 1e5], [-2e5, 2e5]]
    )
    gm = GaussianMixture(
        4, covariance_type="tied", reg_covar=0.0, n_init=2, init_params="random", max_iter=25, random_state=1790
    )
    fit_quietly(gm, X)
    for history, events in zip(gm.init_lower_bounds_history_, gm.init_repairs_, strict=True):
        first_repair = min((event.iteration for event in events), default=len(history))
        steps = np.diff(history[:first_repair])
        assert (steps >= -1e-10 * (1 + np.abs(history[: len(steps)]))).all(), (history, events)
