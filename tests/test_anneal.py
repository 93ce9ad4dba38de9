"""strategy='anneal': deterministic annealing EM, against NumPy written from the formulas.

The tempered E-step is checked against SciPy densities for every covariance type; a whole annealed fit against
a NumPy implementation of the documented schedule (levels, their settling rule, convergence only at beta = 1);
and restarts with different schedules in one batch against each run alone.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import interrupt_iteration, make_blobs
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

from torchgmm import ConvergenceWarning, GaussianMixture
from torchgmm.covariance import get_covariance_type
from torchgmm.data import scanned
from torchgmm.em import MixtureParameters
from torchgmm.passes import e_step
from torchgmm.trainer import LEVEL_TOL

R, K, D, N = 3, 3, 2, 60


def _params(covariance_type: str, rng: np.random.Generator) -> MixtureParameters:
    covariance = get_covariance_type(covariance_type)
    if covariance_type in ("full", "tied"):
        A = rng.normal(size=(R, K if covariance_type == "full" else 1, D, D))
        cov = torch.as_tensor(A @ np.swapaxes(A, -1, -2) + 0.5 * np.eye(D))
    elif covariance_type == "diag":
        cov = torch.as_tensor(rng.uniform(0.5, 2.0, (R, K, D)))
    else:
        cov = torch.as_tensor(rng.uniform(0.5, 2.0, (R, K)))
    P, ok = covariance.factorise(cov)
    assert bool(ok.all())
    return MixtureParameters(
        torch.as_tensor(rng.dirichlet(np.ones(K), R)), torch.as_tensor(rng.normal(0, 2, (R, K, D))), cov, P
    )


def _full(cov: np.ndarray, r: int, k: int) -> np.ndarray:
    c = cov[r, min(k, cov.shape[1] - 1)] if cov.ndim >= 3 else cov[r, k]
    return np.diag(c) if c.ndim == 1 else (c * np.eye(D) if c.ndim == 0 else c)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_tempered_e_step_matches_scipy(covariance_type, dtype):
    rng = np.random.default_rng(4)
    params = _params(covariance_type, rng)
    X = rng.normal(0, 2, (N, D))
    beta = np.array([0.1, 0.5, 1.0])
    data = scanned(torch.as_tensor(X), dtype)  # centred on the data mean: so are the means the pass gets
    centred = MixtureParameters(
        params.weights, params.means - data.shift, params.covariances, params.precisions_cholesky
    )
    stats = e_step(
        data,
        centred.map(lambda t: t.to(dtype)),
        get_covariance_type(covariance_type),
        rows=7,
        beta=torch.as_tensor(beta),
    )
    w, mu, cov = (t.numpy() for t in (params.weights, params.means, params.covariances))
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    for r in range(R):
        log_prob = np.stack(
            [np.log(w[r, k]) + multivariate_normal(mu[r, k], _full(cov, r, k)).logpdf(X) for k in range(K)], axis=1
        )
        resp = softmax(beta[r] * log_prob, axis=1)  # tempered
        np.testing.assert_allclose(stats.log_likelihood[r].item(), logsumexp(log_prob, axis=1).sum(), **tol)
        np.testing.assert_allclose(stats.nk[r].numpy(), resp.sum(0), **tol)
        centred = X[None] - mu[r][:, None]  # [K, N, D]
        np.testing.assert_allclose(stats.s1[r].numpy(), np.einsum("nk,kni->ki", resp, centred), **tol)
        scatter = np.einsum("nk,kni,knj->kij", resp, centred, centred)
        expected = {
            "full": scatter,
            "tied": scatter.sum(0, keepdims=True),
            "diag": np.diagonal(scatter, axis1=1, axis2=2),
            "spherical": np.trace(scatter, axis1=1, axis2=2)[:, None],
        }[covariance_type]
        np.testing.assert_allclose(stats.s2[r].numpy(), expected, rtol=tol["rtol"], atol=tol["atol"] * 10)


def _numpy_anneal(X, weights, means, variances, beta_start, steps, level_iter, tol, max_iter, reg_covar):
    """Deterministic annealing EM with diagonal covariances, from the documented schedule (float64 NumPy)."""
    n = X.shape[0]
    level, since, bound, history = 0, 0, -np.inf, []
    converged = False
    for t in range(1, max_iter + 1):
        beta = 1.0 if level >= steps else beta_start ** (1.0 - level / steps)
        log_prob = np.log(weights) + np.stack(
            [multivariate_normal(means[k], np.diag(variances[k])).logpdf(X) for k in range(len(weights))], axis=1
        )
        lower_bound = logsumexp(log_prob, axis=1).mean()
        resp = softmax(beta * log_prob, axis=1)
        nk = resp.sum(0) + 10 * np.finfo(np.float64).eps
        means = resp.T @ X / nk[:, None]
        variances = np.stack([(resp[:, k, None] * (X - means[k]) ** 2).sum(0) for k in range(len(nk))]) / nk[:, None]
        variances += reg_covar
        weights = nk / n
        change, bound = lower_bound - bound, lower_bound
        history.append(lower_bound)
        settled = since == 0 or t - since >= 2
        if beta < 1.0:
            if (abs(change) < LEVEL_TOL * tol and settled) or t - since >= level_iter:
                level, since = level + 1, t
        elif abs(change) < tol and settled:
            converged = True
            break
    return history, means, converged


@pytest.mark.parametrize(
    ("beta_start", "steps", "level_iter"), [(0.05, 3, 4), (0.02, 4, 2), (0.3, 2, 50), (1.0, 4, 10)]
)
def test_an_annealed_fit_follows_the_schedule_computed_in_numpy(beta_start, steps, level_iter):
    X, _ = make_blobs(150, 2, 4, 1.5, seed=11)
    rng = np.random.default_rng(2)
    means = X[rng.choice(len(X), 4, replace=False)]
    weights, variances = np.full(4, 0.25), np.ones((4, 2))
    tol, reg = 1e-4, 1e-6
    history, final_means, converged = _numpy_anneal(
        X, weights, means, variances, beta_start, steps, level_iter, tol, 200, reg
    )
    start = dict(weights_init=weights, means_init=means, precisions_init=1 / variances)
    common = dict(covariance_type="diag", tol=tol, reg_covar=reg, max_iter=200, **start)
    gm = GaussianMixture(
        4, strategy="anneal", anneal_beta_start=beta_start, anneal_steps=steps, anneal_iter=level_iter, **common
    ).fit(X)
    np.testing.assert_allclose(gm.lower_bounds_, history, rtol=1e-9)
    np.testing.assert_allclose(gm.means_, final_means, rtol=1e-7, atol=1e-8)
    assert gm.converged_ == converged and gm.n_iter_ == len(history)
    if beta_start < 1:  # the levels below 1 took iterations that plain EM does not
        plain = GaussianMixture(4, **common).fit(X)
        assert plain.lower_bounds_[0] == pytest.approx(history[0], rel=1e-12)  # the same first E-step
        assert len(history) > 2 * steps


def test_beta_one_is_plain_em():
    X, _ = make_blobs(120, 3, 3, 2.0, seed=5)
    params = dict(n_components=3, n_init=4, random_state=2, tol=1e-6)
    plain = GaussianMixture(**params).fit(X)
    annealed = GaussianMixture(strategy="anneal", anneal_beta_start=1.0, **params).fit(X)
    assert annealed.init_lower_bounds_history_ == plain.init_lower_bounds_history_
    np.testing.assert_array_equal(annealed.means_, plain.means_)


def test_restarts_with_different_schedules_in_one_batch_run_as_they_would_alone():
    X, _ = make_blobs(150, 2, 4, 1.5, seed=8)
    means, weights, precisions = X[:4], np.full(4, 0.25), np.broadcast_to(np.eye(2), (4, 2, 2))
    starts = [0.05, 0.3, 1.0]
    common = dict(
        n_components=4,
        covariance_type="full",
        tol=1e-5,
        max_iter=150,
        means_init=means,
        weights_init=weights,
        precisions_init=precisions,
        anneal_steps=3,
        anneal_iter=6,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batch = GaussianMixture(n_init=3, strategy="anneal", anneal_beta_start=starts, **common).fit(X)
        for r, start in enumerate(starts):
            alone = GaussianMixture(n_init=1, strategy="anneal", anneal_beta_start=start, **common).fit(X)
            np.testing.assert_allclose(batch.init_lower_bounds_history_[r], alone.lower_bounds_, rtol=1e-10)
    # the schedules differ, so do the restarts' paths
    assert len({len(h) for h in batch.init_lower_bounds_history_}) > 1


def test_an_interrupted_annealed_fit_resumes_where_it_stopped(tmp_path, monkeypatch):
    X, _ = make_blobs(100, 2, 3, 2.0, seed=6)
    params = dict(
        n_components=3,
        n_init=3,
        random_state=1,
        tol=1e-5,
        strategy="anneal",
        anneal_beta_start=[0.05, 0.2, 0.6],
        anneal_steps=3,
        anneal_iter=3,
    )
    whole = GaussianMixture(**params).fit(X)
    path = tmp_path / "anneal.ckpt"
    with monkeypatch.context() as patch:
        interrupt_iteration(patch, at=5)  # inside the schedule
        with pytest.raises(KeyboardInterrupt):
            GaussianMixture(checkpoint_path=path, checkpoint_interval=1, **params).fit(X)
    resumed = GaussianMixture(checkpoint_path=path, checkpoint_interval=1, **params).fit(X)
    assert resumed.init_lower_bounds_history_ == whole.init_lower_bounds_history_
    np.testing.assert_array_equal(resumed.means_, whole.means_)


def test_a_checkpoint_of_another_schedule_is_refused(tmp_path, monkeypatch):
    X, _ = make_blobs(60, 2, 3, 2.0, seed=4)
    path = tmp_path / "fit.ckpt"
    params = dict(
        n_components=3,
        n_init=2,
        random_state=0,
        max_iter=4,
        checkpoint_path=path,
        checkpoint_interval=1,
        strategy="anneal",
    )
    with monkeypatch.context() as patch:
        interrupt_iteration(patch)
        with pytest.raises(KeyboardInterrupt):
            GaussianMixture(anneal_beta_start=0.2, **params).fit(X)
    with pytest.raises(ValueError, match="checkpoint of another fit: anneal is"):
        GaussianMixture(anneal_beta_start=0.5, **params).fit(X)


def test_annealing_finds_a_better_optimum_where_plain_restarts_get_stuck():
    # digits: plain restarts land several nats per sample apart; annealed restarts from the same seeds do better
    from sklearn.datasets import load_digits

    X = load_digits().data
    X = X[:, X.std(0) > 0]
    params = dict(n_components=10, covariance_type="full", reg_covar=1e-2, n_init=2, max_iter=300)
    plain = [GaussianMixture(random_state=s, **params).fit(X).lower_bound_ for s in range(3)]
    annealed = [GaussianMixture(random_state=s, strategy="anneal", **params).fit(X).lower_bound_ for s in range(3)]
    assert np.median(annealed) > np.median(plain) + 0.3
