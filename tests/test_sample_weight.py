"""sample_weight: weighted rows against repeated rows, dropped rows, and a weighted EM written in NumPy.

A row of integer weight ``w`` must count exactly as ``w`` copies of it (from the same start), a row of weight
zero as no row at all, and scaling every weight must change nothing.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import interrupt_iteration
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from torchgmm import ConvergenceWarning, GaussianMixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
PRECISIONS = {
    "full": np.stack([np.eye(2)] * 3),
    "tied": np.eye(2),
    "diag": np.ones((3, 2)),
    "spherical": np.ones(3),
}


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, 1.0, (60, 2)) for c in (-3.0, 0.0, 4.0)])
    return X, rng.integers(0, 4, len(X))


def _start(covariance_type: str, X: np.ndarray, **extra) -> dict:
    return dict(
        n_components=3,
        covariance_type=covariance_type,
        means_init=X[[0, 70, 150]],
        weights_init=[0.3, 0.3, 0.4],
        precisions_init=PRECISIONS[covariance_type],
        tol=1e-10,
        max_iter=300,
        **extra,
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("batch_size", [None, 17])
def test_integer_weights_are_repeated_rows(covariance_type, batch_size):
    X, w = _data()
    repeated = np.repeat(X, w, axis=0)
    params = _start(covariance_type, X, batch_size=batch_size)
    weighted = GaussianMixture(**params).fit(X, sample_weight=w)
    copies = GaussianMixture(**params).fit(repeated)
    assert weighted.n_iter_ == copies.n_iter_
    np.testing.assert_allclose(weighted.lower_bounds_, copies.lower_bounds_, rtol=1e-10)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(copies, name), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.repeat(weighted.predict(X), w), copies.predict(repeated))
    assert weighted.score(X, sample_weight=w) == pytest.approx(copies.score(repeated), rel=1e-12)
    assert weighted.bic(X, sample_weight=w) == pytest.approx(copies.bic(repeated), rel=1e-12)
    assert weighted.aic(X, sample_weight=w) == pytest.approx(copies.aic(repeated), rel=1e-12)
    labels = GaussianMixture(**params).fit_predict(X, sample_weight=w)
    np.testing.assert_array_equal(labels, weighted.predict(X))


def test_zero_weights_are_dropped_rows_and_scaling_changes_nothing():
    X, w = _data(1)
    params = _start("full", X)
    kept = w > 0
    weighted = GaussianMixture(**params).fit(X, sample_weight=(w > 0).astype(float))
    dropped = GaussianMixture(**params).fit(X[kept])
    np.testing.assert_allclose(weighted.lower_bounds_, dropped.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(weighted.means_, dropped.means_, rtol=1e-10)
    scaled = GaussianMixture(**params).fit(X, sample_weight=w * 7.25)
    plain = GaussianMixture(**params).fit(X, sample_weight=w)
    np.testing.assert_allclose(scaled.lower_bounds_, plain.lower_bounds_, rtol=1e-10)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(scaled, name), getattr(plain, name), rtol=1e-10, atol=1e-12)
    # ones are no weights at all, from any initialisation
    for init in ("kmeans", "k-means++", "random", "random_from_data"):
        one = GaussianMixture(3, init_params=init, random_state=0).fit(X, sample_weight=np.ones(len(X)))
        none = GaussianMixture(3, init_params=init, random_state=0).fit(X)
        np.testing.assert_allclose(one.lower_bounds_, none.lower_bounds_, rtol=1e-10, err_msg=init)


def _numpy_weighted_em(X, w, weights, means, variances, tol, max_iter, reg):
    """EM with diagonal covariances and row weights, from the formulas (float64 NumPy)."""
    history, bound = [], -np.inf
    for _ in range(max_iter):
        log_prob = np.log(weights) + np.stack(
            [multivariate_normal(means[k], np.diag(variances[k])).logpdf(X) for k in range(len(weights))], axis=1
        )
        norm = logsumexp(log_prob, axis=1)
        history.append((w * norm).sum() / w.sum())
        resp = np.exp(log_prob - norm[:, None]) * w[:, None]
        nk = resp.sum(0) + 10 * np.finfo(np.float64).eps
        means = resp.T @ X / nk[:, None]
        variances = np.stack([(resp[:, k, None] * (X - means[k]) ** 2).sum(0) for k in range(len(nk))]) / nk[:, None]
        variances += reg
        weights = nk / nk.sum()
        if abs(history[-1] - bound) < tol:
            break
        bound = history[-1]
    return history, weights, means, variances


def test_a_weighted_fit_follows_weighted_em_in_numpy():
    X, _ = _data(2)
    w = np.random.default_rng(3).gamma(0.7, 2.0, len(X))  # real-valued weights, some tiny
    start = dict(weights=np.array([0.2, 0.5, 0.3]), means=X[[5, 65, 125]], variances=np.ones((3, 2)))
    history, weights, means, variances = _numpy_weighted_em(X, w, *start.values(), 1e-10, 300, 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(
            3,
            covariance_type="diag",
            tol=1e-10,
            max_iter=300,
            weights_init=start["weights"],
            means_init=start["means"],
            precisions_init=1 / start["variances"],
        ).fit(X, sample_weight=w)
    np.testing.assert_allclose(gm.lower_bounds_, history, rtol=1e-9)
    np.testing.assert_allclose(gm.weights_, weights, rtol=1e-8)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-8)
    np.testing.assert_allclose(gm.covariances_, variances, rtol=1e-8)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data"])
def test_rows_of_weight_zero_never_seed_a_component(init_params):
    X, _ = _data(4)
    outliers = np.full((40, 2), 500.0) + np.random.default_rng(0).normal(size=(40, 2))
    data = np.concatenate([X, outliers])
    w = np.concatenate([np.ones(len(X)), np.zeros(len(outliers))])
    for seed in range(3):
        gm = GaussianMixture(4, init_params=init_params, random_state=seed).fit(data, sample_weight=w)
        assert np.abs(gm.means_).max() < 50, gm.means_  # no component sits on the weightless outliers
    unweighted = GaussianMixture(4, init_params=init_params, random_state=0).fit(data)
    assert np.abs(unweighted.means_).max() > 400  # without weights the outliers get a component


def test_a_checkpoint_of_other_weights_is_refused(tmp_path, monkeypatch):
    X, w = _data(5)
    path = tmp_path / "w.ckpt"
    params = dict(n_components=3, random_state=0, checkpoint_path=path, checkpoint_interval=1)
    with monkeypatch.context() as patch:
        interrupt_iteration(patch)
        with pytest.raises(KeyboardInterrupt):
            GaussianMixture(**params).fit(X, sample_weight=w)
    assert path.is_file()
    with pytest.raises(ValueError, match="checkpoint of another fit: sample_weight"):
        GaussianMixture(**params).fit(X, sample_weight=w[::-1])
    resumed = GaussianMixture(**params).fit(X, sample_weight=w)
    whole = GaussianMixture(n_components=3, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(resumed.means_, whole.means_, rtol=1e-12)


def test_weighted_online_updates_are_updates_on_repeated_rows():
    import torch

    from torchgmm import GaussianMixtureModule

    X, w = _data(6)
    order = np.random.default_rng(1).permutation(len(X))
    X, w = X[order], w[order]
    params = _start("full", X)
    weighted, copies = GaussianMixture(**params), GaussianMixture(**params)
    for rows in np.array_split(np.arange(len(X)), 4):
        weighted.partial_fit(X[rows], sample_weight=w[rows])
        copies.partial_fit(np.repeat(X[rows], w[rows], axis=0))
        np.testing.assert_allclose(weighted.means_, copies.means_, rtol=1e-10)
        np.testing.assert_allclose(weighted.lower_bounds_, copies.lower_bounds_, rtol=1e-10)
    module = GaussianMixtureModule.from_covariances(
        torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64),
        torch.as_tensor(X[[0, 70, 150]]),
        torch.eye(2).double().expand(3, 2, 2),
    )
    twin = GaussianMixtureModule.from_covariances(module.weights, module.means, torch.eye(2).double().expand(3, 2, 2))
    rows = np.arange(60)
    got = module.partial_fit(torch.as_tensor(X[rows]), sample_weight=torch.as_tensor(w[rows], dtype=torch.float64))
    expected = twin.partial_fit(torch.as_tensor(np.repeat(X[rows], w[rows], axis=0)))
    assert float(got) == pytest.approx(float(expected), rel=1e-12)
    torch.testing.assert_close(module.means, twin.means, rtol=1e-10, atol=1e-12)


def test_weighted_lloyd_and_initial_statistics_are_those_of_repeated_rows():
    import torch

    from torchgmm.covariance import get_covariance_type
    from torchgmm.data import scanned
    from torchgmm.init import kmeans, squared_distances
    from torchgmm.passes import statistics_from_resp

    X, w = _data(7)
    weighted = scanned(torch.as_tensor(X)).with_weights(torch.as_tensor(w, dtype=torch.float64), collective=False)
    copies = scanned(torch.as_tensor(np.repeat(X, w, axis=0)))
    start = torch.as_tensor(X[[1, 61, 121]]).unsqueeze(0)  # [R=1, K, D], in the data's coordinates
    a = kmeans(weighted, start - weighted.shift, rows=23) + weighted.shift
    b = kmeans(copies, start - copies.shift, rows=23) + copies.shift
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    def labels(shift):
        return lambda _, x: torch.nn.functional.one_hot(squared_distances(x + shift, a).argmin(-1), 3).double()

    covariance = get_covariance_type("full")
    got = statistics_from_resp(weighted, labels(weighted.shift), a - weighted.shift, covariance, rows=19)
    expected = statistics_from_resp(copies, labels(copies.shift), a - copies.shift, covariance, rows=19)
    for name, x, y in zip(got._fields[1:], got[1:], expected[1:], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-9, msg=name)


# ------------------------------------------------------------------------------------ weights carried by chunks


def _separated(seed: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Three clusters apart enough for EM to converge in a few iterations, whatever the order of its sums."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(c, 1.0, (60, 2)) for c in (-8.0, 0.0, 8.0)])
    order = rng.permutation(len(X))
    return X[order], rng.integers(0, 4, len(X))


def _weighted_source(kind: str, X: np.ndarray, w: np.ndarray, rows: int = 23):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    Xt, wt = torch.as_tensor(X), torch.as_tensor(w, dtype=torch.float64)
    if kind == "pairs":  # NumPy pairs, the weights as a column in one chunk
        return [(X[i : i + rows], w[i : i + rows, None] if i == 0 else w[i : i + rows]) for i in range(0, len(X), rows)]
    if kind == "triples":  # (rows, labels, weights): the weights are the last element
        return [
            (Xt[i : i + rows], torch.zeros(len(Xt[i : i + rows])), wt[i : i + rows]) for i in range(0, len(X), rows)
        ]
    if kind == "dataset":
        return TensorDataset(Xt, wt)
    return DataLoader(TensorDataset(Xt, wt), batch_size=rows)


@pytest.mark.parametrize("kind", ["pairs", "triples", "dataset", "loader"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_weights_carried_by_chunks_are_repeated_rows(kind, covariance_type):
    X, w = _separated()
    params = _start(covariance_type, X, batch_size=23)
    params["means_init"] = np.array([[-8.0, -8.0], [0.5, 0.5], [7.0, 8.0]])
    source = _weighted_source(kind, X, w)
    weighted = GaussianMixture(**params).fit(source, sample_weight="chunks")
    copies = GaussianMixture(**params).fit(np.repeat(X, w, axis=0))
    assert weighted.n_iter_ == copies.n_iter_
    np.testing.assert_allclose(weighted.lower_bounds_, copies.lower_bounds_, rtol=1e-10)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(
            np.asarray(getattr(weighted, name)), getattr(copies, name), rtol=1e-10, atol=1e-12, err_msg=name
        )
    np.testing.assert_array_equal(
        np.repeat(np.asarray(weighted.predict(source)), w), copies.predict(np.repeat(X, w, 0))
    )
    repeated = np.repeat(X, w, axis=0)
    assert weighted.score(source, sample_weight="chunks") == pytest.approx(copies.score(repeated), rel=1e-12)
    assert weighted.bic(source, sample_weight="chunks") == pytest.approx(copies.bic(repeated), rel=1e-12)
    assert weighted.aic(source, sample_weight="chunks") == pytest.approx(copies.aic(repeated), rel=1e-12)


def test_weights_carried_by_chunks_are_the_weights_beside_them():
    """The same chunks weighted from their batches or from an array beside them: the same fit, bit for bit."""
    X, w = _data(9)
    w = w * np.random.default_rng(2).gamma(1.0, 1.0, len(X))  # real weights, a quarter of them zero
    chunks = [X[i : i + 31] for i in range(0, len(X), 31)]
    pairs = [(x, w[i : i + len(x)]) for x, i in zip(chunks, range(0, len(X), 31), strict=True)]
    for params in (dict(random_state=0), dict(random_state=1, init_params="random_from_data", n_init=3)):
        beside = GaussianMixture(3, **params).fit(chunks, sample_weight=w)
        carried = GaussianMixture(3, **params).fit(pairs, sample_weight="chunks")
        np.testing.assert_array_equal(carried.lower_bounds_, beside.lower_bounds_)
        np.testing.assert_array_equal(carried.means_, beside.means_)
        labels = GaussianMixture(3, **params).fit_predict(pairs, sample_weight="chunks")
        np.testing.assert_array_equal(labels, beside.predict(X))
    online, twin = GaussianMixture(3, random_state=0), GaussianMixture(3, random_state=0)
    for i in range(0, len(X), 60):
        online.partial_fit([(X[i : i + 60], w[i : i + 60])], sample_weight="chunks")
        twin.partial_fit(X[i : i + 60], sample_weight=w[i : i + 60])
    np.testing.assert_array_equal(online.means_, twin.means_)


def test_labels_in_batches_are_ignored_without_chunk_weights():
    """Without sample_weight='chunks' the last element of a batch is a label, never a weight."""
    X, w = _data(10)
    pairs = [(X[i : i + 40], w[i : i + 40]) for i in range(0, len(X), 40)]
    plain = GaussianMixture(3, random_state=0).fit([x for x, _ in pairs])
    np.testing.assert_array_equal(GaussianMixture(3, random_state=0).fit(pairs).means_, plain.means_)
    weighted = GaussianMixture(3, random_state=0).fit(pairs, sample_weight="chunks")
    assert not np.allclose(weighted.means_, plain.means_)
