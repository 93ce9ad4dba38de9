"""Model files: round trips, refusal of code, versions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, FITTED_ATTRIBUTES, make_blobs

from torchgmm import GaussianMixture, NotFittedError


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_gives_the_same_model(covariance_type, as_tensor, tmp_path):
    X, _ = make_blobs(300, 3, 3, 4.0, seed=0)
    X = torch.as_tensor(X, dtype=torch.float32) if as_tensor else X
    gm = GaussianMixture(3, covariance_type=covariance_type, n_init=3, reg_covar=1e-4, random_state=0).fit(X)
    gm.save(tmp_path / "m.pt")
    loaded = GaussianMixture.load(tmp_path / "m.pt")
    assert loaded.get_params() == gm.get_params()
    for name in FITTED_ATTRIBUTES:
        a, b = getattr(loaded, name), getattr(gm, name)
        assert type(a) is type(b), name
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=0, err_msg=name)
    assert loaded.init_lower_bounds_history_ == gm.init_lower_bounds_history_
    np.testing.assert_array_equal(np.asarray(loaded.predict(X)), np.asarray(gm.predict(X)))
    np.testing.assert_array_equal(np.asarray(loaded.score_samples(X)), np.asarray(gm.score_samples(X)))


def test_given_init_arrays_are_kept(tmp_path):
    X, _ = make_blobs(200, 2, 2, 5.0, seed=1)
    gm = GaussianMixture(2, means_init=np.array([[-1.0, 0.0], [1.0, 0.0]]), random_state=0).fit(X)
    gm.save(tmp_path / "m.pt")
    np.testing.assert_array_equal(GaussianMixture.load(tmp_path / "m.pt").means_init, gm.means_init)


def test_a_file_holding_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"format": "torchgmm-model", "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"is not a readable torchgmm model file"):
        GaussianMixture.load(tmp_path / "evil.pt")


def test_other_files_and_versions(tmp_path):
    torch.save({"weights": torch.ones(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"is not a torchgmm model file"):
        GaussianMixture.load(tmp_path / "other.pt")
    X, _ = make_blobs(100, 2, 2, 5.0, seed=2)
    GaussianMixture(2, random_state=0).fit(X).save(tmp_path / "m.pt")
    content = torch.load(tmp_path / "m.pt", weights_only=True)
    content["format_version"] = 99
    torch.save(content, tmp_path / "future.pt")
    with pytest.raises(ValueError, match=r"model format 99; this torchgmm .* reads format 1\. Upgrade it"):
        GaussianMixture.load(tmp_path / "future.pt")
    with pytest.raises(FileNotFoundError):
        GaussianMixture.load(tmp_path / "missing.pt")


def test_saving_an_unfitted_estimator():
    with pytest.raises(NotFittedError):
        GaussianMixture(2).save("never.pt")
