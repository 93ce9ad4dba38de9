"""strategy='split-merge' (and 'auto'): the moves' scores, candidates and initial parameters against NumPy written
from the formulas, and whole fits on data with a planted local optimum that plain EM cannot leave.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from torchgmm import ConvergenceWarning, GaussianMixture
from torchgmm.covariance import get_covariance_type
from torchgmm.data import scanned
from torchgmm.em import MixtureParameters
from torchgmm.mstep import RepairState
from torchgmm.passes import responsibility_overlaps
from torchgmm.smem import Move, Round, candidate_moves, moved_parameters

K, D = 4, 2


def _mixture(covariance_type: str, rng: np.random.Generator, R: int = 1) -> MixtureParameters:
    covariance = get_covariance_type(covariance_type)
    if covariance_type == "full":
        A = rng.normal(size=(R, K, D, D))
        cov = torch.as_tensor(A @ np.swapaxes(A, -1, -2) + 0.3 * np.eye(D))
    else:
        cov = torch.as_tensor(rng.uniform(0.3, 2.0, (R, K, D)))
    P, _ = covariance.factorise(cov)
    weights = torch.as_tensor(rng.dirichlet(np.full(K, 5.0), R))
    return MixtureParameters(weights, torch.as_tensor(rng.normal(0, 2, (R, K, D))), cov, P)


def _log_prob(X, params, r=0):
    w, mu, cov = (t.numpy() for t in (params.weights, params.means, params.covariances))
    full = [np.diag(cov[r, k]) if cov.ndim == 3 else cov[r, k] for k in range(K)]
    return np.stack([np.log(w[r, k]) + multivariate_normal(mu[r, k], full[k]).logpdf(X) for k in range(K)], axis=1)


def _centred(params: MixtureParameters, shift: torch.Tensor) -> MixtureParameters:
    return MixtureParameters(params.weights, params.means - shift, params.covariances, params.precisions_cholesky)


def test_the_overlaps_match_numpy():
    rng = np.random.default_rng(0)
    X = rng.normal(0, 2, (90, D))
    params = _mixture("full", rng, R=2)
    data = scanned(torch.as_tensor(X))
    overlap, fit = responsibility_overlaps(data, _centred(params, data.shift), get_covariance_type("full"), rows=13)
    for r in range(2):
        log_prob = _log_prob(X, params, r)
        norm = logsumexp(log_prob, axis=1)
        resp = np.exp(log_prob - norm[:, None])
        np.testing.assert_allclose(overlap[r].numpy(), resp.T @ resp, rtol=1e-10)
        np.testing.assert_allclose(fit[r].numpy(), resp.T @ norm, rtol=1e-10)


def test_candidates_pair_the_most_overlapping_merge_with_the_worst_explained_split():
    rng = np.random.default_rng(3)
    resp = rng.dirichlet(np.full(5, 0.4), 200)
    overlap = torch.as_tensor(resp.T @ resp)
    fit = torch.as_tensor(resp.T @ rng.normal(-3, 1, 200))
    moves = candidate_moves(overlap, fit, 7)
    # NumPy from the documented rule
    cosine = overlap.numpy() / np.sqrt(np.outer(np.diag(overlap.numpy()), np.diag(overlap.numpy())))
    mean_fit = fit.numpy() / resp.sum(0)
    pairs = sorted(itertools.combinations(range(5), 2), key=lambda p: (-cosine[p], p))
    splits = sorted(range(5), key=lambda k: (mean_fit[k], k))
    ranked = sorted(
        ((a + b, a, (i, j), k) for a, (i, j) in enumerate(pairs) for b, k in enumerate(splits) if k not in (i, j)),
        key=lambda t: (t[0], t[1]),
    )
    assert moves == [Move(pair, k) for _, _, pair, k in ranked[:7]]
    assert moves[0].merged == pairs[0]
    assert candidate_moves(overlap[:2, :2], fit[:2], 5) == []  # no move keeps K fixed with two components


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_moved_parameters_are_one_m_step_of_the_moved_responsibilities(covariance_type):
    rng = np.random.default_rng(7)
    X = rng.normal(0, 2.5, (150, D))
    params = _mixture(covariance_type, rng)
    covariance = get_covariance_type(covariance_type)
    moves = [Move((0, 1), 2), Move((3, 2), 0)]
    data = scanned(torch.as_tensor(X))
    reg = 1e-6
    repairs = RepairState.start(2, K, covariance, reg, torch.device("cpu"))
    got, ok = moved_parameters(data, _centred(params, data.shift), moves, covariance, repairs, rows=17)
    assert ok == [True, True]
    log_prob = _log_prob(X, params)
    resp = np.exp(log_prob - logsumexp(log_prob, axis=1, keepdims=True))
    cov = params.covariances[0].numpy()
    for c, move in enumerate(moves):
        i, j = move.merged
        k = move.split
        full = np.diag(cov[k]) if cov.ndim == 2 else cov[k]
        values, vectors = np.linalg.eigh(full)
        side = (X - params.means[0, k].numpy()) @ vectors[:, -1] * np.sign(1.0) > 0
        moved = resp.copy()
        moved[:, i] = resp[:, i] + resp[:, j]
        moved[:, j] = np.where(side, resp[:, k], 0.0)
        moved[:, k] = np.where(side, 0.0, resp[:, k])
        nk = moved.sum(0) + 10 * np.finfo(np.float64).eps
        means = moved.T @ X / nk[:, None]
        np.testing.assert_allclose(got.weights[c].numpy(), nk / nk.sum(), rtol=1e-10)
        np.testing.assert_allclose(got.means[c].numpy() + data.shift.numpy(), means, rtol=1e-9, atol=1e-10)
        for m in range(K):
            d = X - means[m]
            scatter = (moved[:, m, None] * d).T @ d / nk[m]
            expected = scatter + reg * np.eye(D) if covariance_type == "full" else np.diag(scatter) + reg
            np.testing.assert_allclose(got.covariances[c, m].numpy(), expected, rtol=1e-9, atol=1e-12)


def _three_clusters(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [12.0, 0.0], [12.0, 12.0]])
    return np.concatenate([c + rng.normal(size=(300, 2)) for c in centres])


# two components share the first cluster, one spans the other two: a fixed point plain EM stays at
STUCK = np.array([[-0.5, 0.0], [0.5, 0.0], [12.0, 6.0]])


def _stuck_fit(**params) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(3, means_init=STUCK, tol=1e-6, max_iter=300, random_state=0, **params).fit(
            _three_clusters()
        )


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_split_and_merge_leaves_a_local_optimum_that_plain_em_keeps(covariance_type):
    plain = _stuck_fit(covariance_type=covariance_type)
    moved = _stuck_fit(covariance_type=covariance_type, strategy="split-merge")
    assert plain.split_merge_rounds_ == []
    assert moved.lower_bound_ > plain.lower_bound_ + 0.5
    first = moved.split_merge_rounds_[0]
    assert isinstance(first, Round) and first.kept
    assert sorted(first.merged) == [0, 1] and first.split == 2  # the two in the first cluster; the wide one
    np.testing.assert_allclose(np.sort(moved.weights_), [1 / 3] * 3, atol=0.01)
    centres = np.array([[0.0, 0.0], [12.0, 0.0], [12.0, 12.0]])
    found = np.sort(np.linalg.norm(moved.means_[:, None] - centres[None], axis=-1).min(0))
    assert found.max() < 0.2
    # the rounds chain: each starts where the last kept one ended, only the last may be refused
    for before, after in itertools.pairwise(moved.split_merge_rounds_):
        assert before.kept and after.lower_bound_before == pytest.approx(before.lower_bound_after)
    for r in moved.split_merge_rounds_:
        assert r.kept == (r.lower_bound_after > r.lower_bound_before + 1e-6)
        assert r.cost > 0
    # the kept restart's bounds, then every kept round's
    assert moved.lower_bounds_[: plain.n_iter_] == pytest.approx(plain.lower_bounds_, rel=1e-12)
    assert moved.n_iter_ == len(moved.lower_bounds_) and moved.lower_bounds_[-1] == moved.lower_bound_
    assert moved.init_lower_bounds_history_ == plain.init_lower_bounds_history_


def test_no_rounds_and_fewer_than_three_components_are_plain_restarts():
    X = _three_clusters()
    plain = GaussianMixture(2, n_init=2, random_state=0).fit(X)
    two = GaussianMixture(2, n_init=2, random_state=0, strategy="split-merge").fit(X)
    assert two.split_merge_rounds_ == [] and two.lower_bounds_ == plain.lower_bounds_
    np.testing.assert_array_equal(two.means_, plain.means_)
    none = _stuck_fit(strategy="split-merge", split_merge_rounds=0)
    assert none.split_merge_rounds_ == [] and none.lower_bound_ == _stuck_fit().lower_bound_


def test_one_candidate_per_round_tries_only_the_best_ranked_move():
    moved = _stuck_fit(strategy="split-merge", split_merge_candidates=1)
    assert moved.split_merge_rounds_[0].kept
    assert all(r.cost >= 2 for r in moved.split_merge_rounds_)


def test_rounds_survive_a_model_file(tmp_path):
    moved = _stuck_fit(strategy="split-merge")
    moved.save(tmp_path / "model.pt")
    loaded = GaussianMixture.load(tmp_path / "model.pt")
    assert loaded.split_merge_rounds_ == moved.split_merge_rounds_
    assert all(isinstance(r, Round) for r in loaded.split_merge_rounds_)


def test_auto_anneals_a_third_of_the_restarts_and_then_moves():
    X = _three_clusters(1)
    gm = GaussianMixture(3, n_init=10, random_state=0, strategy="auto").fit(X)
    assert len(gm.init_lower_bounds_) == math.ceil(10 / 3)
    assert len(gm.split_merge_rounds_) >= 1
    gm1 = GaussianMixture(3, n_init=1, random_state=0, strategy="auto").fit(X)
    assert len(gm1.init_lower_bounds_) == 1
    # one annealed restart starts from the spread's geometric middle: its path is not plain EM's
    plain = GaussianMixture(3, n_init=1, random_state=0).fit(X)
    assert gm1.init_lower_bounds_history_[0] != plain.init_lower_bounds_history_[0]


# ------------------------------------------------------------------------ growing: K + 1 from a fit of K


def test_grown_parameters_split_the_worst_explained_components():
    from torchgmm.smem import grown_parameters

    rng = np.random.default_rng(9)
    X = rng.normal(0, 2.5, (160, D))
    params = _mixture("full", rng)
    data = scanned(torch.as_tensor(X))
    got, ok, _ = grown_parameters(data, _centred(params, data.shift), 6, get_covariance_type("full"), 1e-6)
    assert ok == [True] * 6 and tuple(got.means.shape) == (6, K + 1, D)
    log_prob = _log_prob(X, params)
    norm = logsumexp(log_prob, axis=1)
    resp = np.exp(log_prob - norm[:, None])
    order = np.argsort(resp.T @ norm / resp.sum(0), kind="stable")  # worst-explained first
    cov = params.covariances[0].numpy()
    for c in range(6):
        k = order[c % K]  # more restarts than components: the order again
        axis = np.linalg.eigh(cov[k])[1][:, -1]
        side = (X - params.means[0, k].numpy()) @ axis > 0
        moved = np.concatenate([resp, np.where(side, resp[:, k], 0.0)[:, None]], axis=1)
        moved[:, k] = np.where(side, 0.0, resp[:, k])
        nk = moved.sum(0) + 10 * np.finfo(np.float64).eps
        np.testing.assert_allclose(got.weights[c].numpy(), nk / nk.sum(), rtol=1e-10)
        np.testing.assert_allclose(got.means[c].numpy() + data.shift.numpy(), moved.T @ X / nk[:, None], rtol=1e-9)


def test_a_grown_fit_is_em_from_each_split_start():
    from torchgmm.data import scanned as scan_tensor
    from torchgmm.model import mixture_parameters
    from torchgmm.smem import grown_parameters

    X = _three_clusters(2)
    smaller = GaussianMixture(2, covariance_type="diag", random_state=0, tol=1e-6).fit(X)
    grown = GaussianMixture(3, covariance_type="diag", n_init=2, tol=1e-6)._fit_grown(X, smaller)
    data = scan_tensor(torch.as_tensor(X))
    covariance = get_covariance_type("diag")
    arrays = (smaller.weights_, smaller.means_, smaller.covariances_, smaller.precisions_cholesky_)
    params, _ = mixture_parameters(*arrays, covariance, torch.device("cpu"), torch.float64, data.shift)
    starts, _, _ = grown_parameters(data, params, 2, covariance, 1e-6)
    for r in range(2):
        plain = GaussianMixture(
            3,
            covariance_type="diag",
            tol=1e-6,
            weights_init=starts.weights[r].numpy(),
            means_init=(starts.means[r] + data.shift).numpy(),
            precisions_init=1.0 / starts.covariances[r].numpy(),
        ).fit(X)
        np.testing.assert_allclose(grown.init_lower_bounds_history_[r], plain.lower_bounds_, rtol=1e-9)
    assert grown.lower_bound_ > smaller.lower_bound_ + 0.5  # the third cluster found
    with pytest.raises(ValueError, match="needs a fitted diag mixture of 2, got diag with 3"):
        GaussianMixture(3, covariance_type="diag")._fit_grown(X, grown)


def test_selection_grows_each_count_from_the_one_before():
    from torchgmm import GaussianMixtureSelection

    X = _three_clusters(3)
    common = dict(n_components=[1, 2, 3, 5], covariance_types=["full"], n_init=2, random_state=0)
    grown = GaussianMixtureSelection(grow=True, **common).fit(X)
    fresh = GaussianMixtureSelection(**common).fit(X)
    # K=1 and K=5 (no K=4 before it) start fresh; K=2 grows from K=1 and K=3 from K=2
    for row in (0, 3):
        assert grown.results_["lower_bound"][row] == pytest.approx(fresh.results_["lower_bound"][row], rel=1e-12)
    one = GaussianMixture(1, n_init=2, random_state=0).fit(X)
    two = GaussianMixture(2, n_init=2, random_state=0)._fit_grown(X, one)
    three = GaussianMixture(3, n_init=2, random_state=0)._fit_grown(X, two)
    assert grown.results_["lower_bound"][1] == pytest.approx(two.lower_bound_, rel=1e-12)
    assert grown.results_["lower_bound"][2] == pytest.approx(three.lower_bound_, rel=1e-12)
    assert grown.best_params_ == {"n_components": 3, "covariance_type": "full"}


def test_a_fit_interrupted_during_its_moves_resumes_to_the_same_model(tmp_path, monkeypatch):
    from torchgmm import fitter

    whole = _stuck_fit(strategy="split-merge")
    path = tmp_path / "moves.ckpt"
    moves = fitter.split_and_merge

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fitter, "split_and_merge", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _stuck_fit(strategy="split-merge", checkpoint_path=path, checkpoint_interval=1)
    assert path.is_file()
    monkeypatch.setattr(fitter, "split_and_merge", moves)
    resumed = _stuck_fit(strategy="split-merge", checkpoint_path=path, checkpoint_interval=1)
    assert resumed.split_merge_rounds_ == whole.split_merge_rounds_
    assert resumed.lower_bounds_ == whole.lower_bounds_
    np.testing.assert_array_equal(resumed.means_, whole.means_)
    assert not path.exists()
