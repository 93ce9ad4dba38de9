"""strategy='race': successive halving of the restarts, against plain restarts and the rule simulated in NumPy.

Restarts in a batch are independent, so a race must be exactly the plain fit with the same seed, each restart
cut short where the halving rule (simulated here from the plain fit's bound histories) stops it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import interrupt_iteration, make_blobs

from torchgmm import ConvergenceWarning, GaussianMixture


def _fit(X, **params) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**{"n_components": 6, "covariance_type": "diag", "tol": 1e-6, **params}).fit(X)


def _simulate(histories: list[list[float]], first_cut: int, survivors: int, max_iter: int) -> list[int]:
    """Iterations each restart runs in a race, from its plain run's bounds (the documented rule, in NumPy)."""
    R = len(histories)
    length = [len(h) for h in histories]
    runs = list(length)
    stopped = np.zeros(R, dtype=bool)
    t = first_cut
    while t <= max_iter:
        racing = [r for r in range(R) if not stopped[r]]
        if len(racing) <= survivors:
            break
        bound = {r: histories[r][min(t, length[r]) - 1] for r in racing}  # a converged restart keeps its last
        keep = max(survivors, math.ceil(len(racing) / 2))
        ranked = sorted(racing, key=lambda r: (-bound[r], r))
        for r in ranked[keep:]:
            if length[r] > t:  # still running at the cut: stopped there
                stopped[r] = True
                runs[r] = t
        t *= 2
    return runs


@pytest.mark.parametrize(("n_init", "survivors", "first_cut"), [(16, 2, 2), (20, None, 1), (9, 4, 3)])
def test_a_race_is_the_plain_fit_cut_short_by_the_halving_rule(n_init, survivors, first_cut):
    X, _ = make_blobs(80, 4, 5, 3.0, seed=3)
    params = dict(n_init=n_init, random_state=5, max_iter=60, init_params="random_from_data")
    plain = _fit(X, **params)
    race = _fit(X, strategy="race", race_survivors=survivors, race_first_cut=first_cut, **params)
    kept = survivors if survivors is not None else math.ceil(n_init / 8)
    runs = _simulate(plain.init_lower_bounds_history_, first_cut, kept, 60)
    for r in range(n_init):
        got, full = race.init_lower_bounds_history_[r], plain.init_lower_bounds_history_[r]
        assert len(got) == runs[r], (r, len(got), runs[r])
        np.testing.assert_allclose(got, full[: runs[r]], rtol=1e-10, err_msg=f"restart {r}")
        assert race.init_stopped_early_[r] == (runs[r] < len(full)), r
        assert race.init_lower_bounds_[r] == pytest.approx(full[runs[r] - 1], rel=1e-10)
    assert (~race.init_stopped_early_).sum() >= kept
    # the kept restart is the best of those that finished (a race may have cut the plain fit's winner)
    finished = [
        plain.init_lower_bounds_[r] for r in range(n_init) if runs[r] == len(plain.init_lower_bounds_history_[r])
    ]
    assert race.lower_bound_ == pytest.approx(max(finished), rel=1e-10)
    # the race ran fewer restart-iterations than the plain fit
    assert sum(runs) < sum(len(h) for h in plain.init_lower_bounds_history_)


def test_plain_restarts_are_never_stopped():
    X, _ = make_blobs(50, 3, 3, 4.0, seed=1)
    gm = _fit(X, n_components=3, n_init=6, random_state=0)
    assert gm.strategy == "restarts" and not gm.init_stopped_early_.any() and gm.init_stopped_early_.shape == (6,)


def test_stopped_restarts_survive_a_model_file(tmp_path):
    X, _ = make_blobs(60, 3, 4, 3.0, seed=2)
    gm = _fit(X, n_components=4, n_init=8, random_state=0, strategy="race", race_survivors=1)
    assert gm.init_stopped_early_.sum() >= 1
    gm.save(tmp_path / "m.pt")
    np.testing.assert_array_equal(GaussianMixture.load(tmp_path / "m.pt").init_stopped_early_, gm.init_stopped_early_)


def test_a_race_checkpoint_is_not_resumed_by_a_plain_fit(tmp_path, monkeypatch):
    X, _ = make_blobs(60, 3, 3, 3.0, seed=4)
    path = tmp_path / "fit.ckpt"
    params = dict(n_components=3, n_init=4, random_state=0, max_iter=3, checkpoint_path=path, checkpoint_interval=1)
    # write a checkpoint of a race by interrupting its second iteration
    with monkeypatch.context() as patch, warnings.catch_warnings():
        interrupt_iteration(patch, at=2)
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(KeyboardInterrupt):
            GaussianMixture(strategy="race", **params).fit(X)
    assert path.is_file()
    with pytest.raises(ValueError, match="checkpoint of another fit: strategy is 'race' there and 'restarts' here"):
        GaussianMixture(**params).fit(X)


def test_an_interrupted_race_resumes_where_it_stopped(tmp_path, monkeypatch):
    X, _ = make_blobs(60, 3, 4, 3.0, seed=6)
    params = dict(n_init=12, random_state=1, strategy="race", race_survivors=2, init_params="random_from_data")
    whole = _fit(X, **params)
    path = tmp_path / "race.ckpt"
    with monkeypatch.context() as patch:
        interrupt_iteration(patch, at=6)  # after the cuts at 2 and 4
        with pytest.raises(KeyboardInterrupt):
            _fit(X, checkpoint_path=path, checkpoint_interval=1, **params)
    resumed = _fit(X, checkpoint_path=path, checkpoint_interval=1, **params)
    np.testing.assert_array_equal(resumed.init_stopped_early_, whole.init_stopped_early_)
    assert [len(h) for h in resumed.init_lower_bounds_history_] == [len(h) for h in whole.init_lower_bounds_history_]
    assert resumed.lower_bound_ == pytest.approx(whole.lower_bound_, rel=1e-12)
