"""GaussianMixtureSelection against fits looped by hand, criteria from their formulas, and the sklearn contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchgmm import GaussianMixture, GaussianMixtureSelection, NotFittedError


def _mixture(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Three axis-aligned clusters with unequal variances per feature: a diagonal model with K=3."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 3.0], [0.0, 9.0, -4.0]])
    scales = np.array([[1.0, 0.3, 2.0], [0.4, 1.5, 0.6], [2.0, 0.5, 0.3]])
    labels = rng.integers(0, 3, n)
    return centres[labels] + rng.normal(size=(n, 3)) * scales[labels], labels


def _n_parameters(covariance_type: str, K: int, D: int) -> int:
    """Free parameters of a mixture, written out from the model's definition."""
    covariance = {"full": K * D * (D + 1) // 2, "tied": D * (D + 1) // 2, "diag": K * D, "spherical": K}
    return (K - 1) + K * D + covariance[covariance_type]


GRID = dict(n_components=[1, 2, 3, 4], covariance_types=("full", "diag", "spherical"), random_state=0)


def test_every_candidate_is_the_fit_a_loop_would_make():
    X, _ = _mixture()
    selection = GaussianMixtureSelection(**GRID).fit(X)
    results = selection.results_
    assert {len(v) for v in results.values()} == {12}
    for row, (covariance_type, k) in enumerate((t, k) for t in GRID["covariance_types"] for k in [1, 2, 3, 4]):
        assert results["covariance_type"][row] == covariance_type and results["n_components"][row] == k
        reference = GaussianMixture(k, covariance_type=covariance_type, random_state=0).fit(X)
        assert results["lower_bound"][row] == pytest.approx(reference.lower_bound_, rel=1e-12)
        n, D = X.shape
        bic = -2 * n * reference.score(X) + _n_parameters(covariance_type, k, D) * np.log(n)
        assert results["bic"][row] == pytest.approx(bic, rel=1e-10)
        assert results["criterion"][row] == results["bic"][row]
        assert results["n_iter"][row] == reference.n_iter_ and results["error"][row] == ""
    best = int(np.nanargmin(results["bic"]))
    assert selection.best_index_ == best and results["rank"][best] == 1
    assert sorted(results["rank"]) == list(range(1, 13))
    assert selection.best_params_ == {"n_components": 3, "covariance_type": "diag"}
    assert selection.best_score_ == results["bic"][best]
    np.testing.assert_array_equal(selection.predict(X), selection.best_estimator_.predict(X))
    assert selection.score(X) == selection.best_estimator_.score(X)
    assert selection.bic(X) == pytest.approx(results["bic"][best], rel=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bic_recovers_the_true_model(seed):
    X, labels = _mixture(seed, n=600)
    selection = GaussianMixtureSelection(range(1, 7), random_state=seed).fit(X)
    assert selection.best_params_ == {"n_components": 3, "covariance_type": "diag"}
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(labels, selection.predict(X)) > 0.95


def test_aic_ranks_by_aic():
    X, _ = _mixture()
    selection = GaussianMixtureSelection(**GRID, criterion="aic").fit(X)
    np.testing.assert_array_equal(selection.results_["criterion"], selection.results_["aic"])
    assert selection.best_index_ == int(np.nanargmin(selection.results_["aic"]))


def test_held_out_scores_the_rows_set_aside_and_refits_the_winner_on_all():
    X, _ = _mixture(n=400)
    selection = GaussianMixtureSelection(**GRID, criterion="held-out", validation_fraction=0.25).fit(X)
    order = np.random.default_rng(0).permutation(len(X))  # the split, as documented: random_state's generator
    held, kept = X[order[:100]], X[order[100:]]
    for row in (0, 5, 11):
        k, covariance_type = int(selection.results_["n_components"][row]), selection.results_["covariance_type"][row]
        reference = GaussianMixture(k, covariance_type=covariance_type, random_state=0).fit(kept)
        assert selection.results_["criterion"][row] == pytest.approx(reference.score(held), rel=1e-12)
    assert selection.best_index_ == int(np.nanargmax(selection.results_["criterion"]))
    refit = GaussianMixture(random_state=0, **selection.best_params_).fit(X)
    np.testing.assert_allclose(selection.best_estimator_.means_, refit.means_, rtol=1e-12)


def test_held_out_works_on_tensors():
    X, _ = _mixture(n=200)
    selection = GaussianMixtureSelection([2, 3], "diag", criterion="held-out", random_state=0).fit(torch.as_tensor(X))
    assert isinstance(selection.predict(torch.as_tensor(X)), torch.Tensor)


def test_a_failed_candidate_is_recorded_and_ranked_last(monkeypatch):
    X, _ = _mixture()
    fit = GaussianMixture.fit

    def failing(self, X, y=None, sample_weight=None, callback=None):
        if self.n_components == 2 and self.covariance_type == "diag":
            raise ValueError("Fitting the mixture model failed: every restart has a degenerate component.")
        return fit(self, X, y, sample_weight=sample_weight, callback=callback)

    monkeypatch.setattr(GaussianMixture, "fit", failing)
    selection = GaussianMixtureSelection(**GRID).fit(X)
    row = 5  # diag, K=2
    assert selection.results_["error"][row].startswith("Fitting the mixture model failed")
    assert np.isnan(selection.results_["criterion"][row]) and selection.results_["rank"][row] == 12
    assert selection.best_params_ == {"n_components": 3, "covariance_type": "diag"}


def test_no_candidate_fitted_is_an_error(monkeypatch):
    def failing(self, X, y=None, sample_weight=None, callback=None):
        raise ValueError("boom")

    monkeypatch.setattr(GaussianMixture, "fit", failing)
    with pytest.raises(ValueError, match="No candidate could be fitted; the first failure: K=1, full: boom"):
        GaussianMixtureSelection([1, 2]).fit(_mixture()[0])


def test_callback_sees_each_candidate_and_its_progress_callback_is_used():
    X, _ = _mixture(n=150)
    seen, iterations = [], []

    def callback(k, covariance_type, estimator):
        seen.append((k, covariance_type, estimator.n_components))
        return lambda iteration, restarts, bound: iterations.append((k, iteration))

    GaussianMixtureSelection([1, 2], ("tied", "spherical"), random_state=0).fit(X, callback=callback)
    assert seen == [(1, "tied", 1), (2, "tied", 2), (1, "spherical", 1), (2, "spherical", 2)]
    assert {k for k, _ in iterations} == {1, 2}


def test_scikit_learn_contract():
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, _ = _mixture()
    selection = GaussianMixtureSelection(n_components=[2, 3], covariance_types="diag", max_iter=50, random_state=0)
    copy = clone(selection)
    assert copy.get_params() == selection.get_params() and copy is not selection
    with pytest.raises(NotFittedError):
        selection.predict(X)
    pipeline = make_pipeline(StandardScaler(), selection).fit(X)
    assert pipeline.predict(X).shape == (len(X),)
    assert pipeline[-1].best_params_["n_components"] == 3
    assert "n_components=[2, 3]" in repr(selection)


# ------------------------------------------------------------------------------------ weighted rows


def _weights(n: int, seed: int = 5) -> np.ndarray:
    """Counts of 0 to 3 (a quarter of the rows dropped): a weighted fit that differs from the plain one."""
    return np.random.default_rng(seed).integers(0, 4, n).astype(np.float64)


def test_weighted_selection_is_the_loop_of_weighted_fits():
    X, _ = _mixture()
    w = _weights(len(X))
    selection = GaussianMixtureSelection(**GRID).fit(X, sample_weight=w)
    for row in range(12):
        k, covariance_type = int(selection.results_["n_components"][row]), selection.results_["covariance_type"][row]
        reference = GaussianMixture(k, covariance_type=covariance_type, random_state=0).fit(X, sample_weight=w)
        assert selection.results_["lower_bound"][row] == pytest.approx(reference.lower_bound_, rel=1e-12)
        # the weighted BIC from its formula: the weights' sum is the number of rows
        total = float(np.sum(w * reference.score_samples(X)))
        bic = -2 * total + _n_parameters(covariance_type, k, X.shape[1]) * np.log(w.sum())
        assert selection.results_["bic"][row] == pytest.approx(bic, rel=1e-10)
    assert selection.bic(X, sample_weight=w) == pytest.approx(selection.best_score_, rel=1e-12)
    assert selection.score(X, sample_weight=w) == selection.best_estimator_.score(X, sample_weight=w)
    plain = GaussianMixtureSelection(**GRID).fit(X)
    assert not np.allclose(plain.results_["bic"], selection.results_["bic"])


def test_weighted_held_out_scores_the_weighted_rows_set_aside():
    X, _ = _mixture(n=400)
    w = _weights(len(X), seed=6)
    grid = dict(GRID, criterion="held-out", validation_fraction=0.25)
    selection = GaussianMixtureSelection(**grid).fit(torch.as_tensor(X), sample_weight=torch.as_tensor(w))
    order = np.random.default_rng(0).permutation(len(X))
    held, kept = order[:100], order[100:]
    for row in (0, 5, 11):
        k, covariance_type = int(selection.results_["n_components"][row]), selection.results_["covariance_type"][row]
        reference = GaussianMixture(k, covariance_type=covariance_type, random_state=0)
        reference.fit(X[kept], sample_weight=w[kept])
        expected = reference.score(X[held], sample_weight=w[held])
        assert selection.results_["criterion"][row] == pytest.approx(expected, rel=1e-10)
    refit = GaussianMixture(random_state=0, **selection.best_params_).fit(X, sample_weight=w)
    np.testing.assert_allclose(selection.best_estimator_.means_.numpy(), refit.means_, rtol=1e-10)


def test_weights_carried_by_chunks_select_as_weights_beside_them():
    X, _ = _mixture()
    w = _weights(len(X), seed=7)
    chunks = [X[i : i + 64] for i in range(0, len(X), 64)]
    pairs = [(x, w[i : i + 64]) for x, i in zip(chunks, range(0, len(X), 64), strict=True)]
    grid = dict(GRID, covariance_types="diag")
    for grow in (False, True):
        carried = GaussianMixtureSelection(**grid, grow=grow).fit(pairs, sample_weight="chunks")
        beside = GaussianMixtureSelection(**grid, grow=grow).fit(chunks, sample_weight=w)
        np.testing.assert_array_equal(carried.results_["bic"], beside.results_["bic"])
        assert carried.best_params_ == beside.best_params_
    # grown candidates fit the weighted rows: the loop of _fit_grown by hand, from the same weighted K=1 fit
    smaller = GaussianMixture(1, covariance_type="diag", random_state=0).fit(X, sample_weight=w)
    grown = GaussianMixture(2, covariance_type="diag", random_state=0)._fit_grown(X, smaller, sample_weight=w)
    selection = GaussianMixtureSelection([1, 2], "diag", random_state=0, grow=True).fit(X, sample_weight=w)
    assert selection.results_["lower_bound"][1] == pytest.approx(grown.lower_bound_, rel=1e-12)
