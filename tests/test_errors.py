"""Bad input to ``torchgmm.GaussianMixture`` fails early with a clear message and leaves nothing half-fitted.

Also covers the warnings of a fit that completes but is suspect: restarts dropped because a covariance
could not be factorised (``FailedRestartWarning``) and a kept restart stopped at ``max_iter``
(``ConvergenceWarning``).
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from conftest import (
    FITTED_ATTRIBUTES,
    assert_same_attributes,
    attribute_values,
    identity_precisions,
    initial,
    run_restarts,
)

import torchgmm
from torchgmm import ConvergenceWarning, GaussianMixture, NotFittedError
from torchgmm.covariance import get_covariance_type
from torchgmm.data import scanned

K, D = 2, 3


@pytest.fixture
def X():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-4, 1, (40, D)), rng.normal(4, 1, (40, D))])


def assert_unfitted(gm):
    """No fitted attribute was set (nothing half-fitted)."""
    present = [name for name in FITTED_ATTRIBUTES if hasattr(gm, name)]
    assert present == [], f"attributes left after a failed fit: {present}"
    assert not gm.__sklearn_is_fitted__()


def fit_fails(gm, X, exc, match):
    with pytest.raises(exc, match=match):
        gm.fit(X)
    assert_unfitted(gm)


# ---------------------------------------------------------------------------------------------- X


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X_names_row_and_column(X, kind, bad):
    X = X.copy()
    X[3, 1] = bad
    X[7, 0] = bad  # a later one: the message names the first
    data = torch.as_tensor(X) if kind == "torch" else X
    # scikit-learn's "Input X contains NaN" / "... infinity", with the position added
    what = "NaN" if np.isnan(bad) else "infinity"
    fit_fails(GaussianMixture(K), data, ValueError, rf"^Input X contains {what} \(first at row 3, column 1\)")


def test_non_finite_X_float32_tensor(X):
    data = torch.as_tensor(X, dtype=torch.float32)
    data[5, 2] = float("nan")
    fit_fails(GaussianMixture(K), data, ValueError, r"row 5, column 2")


@pytest.mark.parametrize(
    "shape, start",
    [((80,), "Expected 2D array, got 1D array instead"), ((), "Expected 2D array, got scalar array instead")]
    + [((4, 20, D), "Found array with dim 3"), ((2, 3, 4, D), "Found array with dim 4")],
)
def test_X_not_2d(shape, start):
    X = np.random.default_rng(0).normal(size=shape)
    fit_fails(GaussianMixture(1), X, ValueError, "^" + re.escape(f"{start} (X has shape {shape})"))


def test_X_1d_hints_reshape():
    with pytest.raises(ValueError, match=r"Reshape your data either using X\.reshape\(-1, 1\)"):
        GaussianMixture(1).fit(np.arange(10.0))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_X_with_zero_rows(kind):
    X = np.empty((0, D))
    fit_fails(
        GaussianMixture(1),
        torch.as_tensor(X) if kind == "torch" else X,
        ValueError,
        re.escape(f"Found array with 0 sample(s) (shape=(0, {D})) while a minimum of 1 is required"),
    )


def test_X_with_zero_features():
    fit_fails(
        GaussianMixture(1),
        np.empty((10, 0)),
        ValueError,
        re.escape("Found array with 0 feature(s) (shape=(10, 0)) while a minimum of 1 is required"),
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([["a", "b"], ["c", "d"]]), r"X must contain numbers, got an array of dtype <U1"),
        ([[1.0, None], [2.0, 3.0]], r"Input X contains NaN \(first at row 0, column 1\)"),
        (
            np.array([["a", 1.0], [2.0, 3.0]], dtype=object),
            r"X must contain numbers, got an array of dtype object: could not convert string to float: 'a'",
        ),
        ([[1.0, 2.0], [3.0]], r"X could not be converted to a numeric array"),
        (np.array([[1 + 1j, 2.0], [3.0, 4.0]]), r"^Complex data not supported: X has dtype complex128"),
        (torch.tensor([[1 + 1j, 2.0], [3.0, 4.0]]), r"^Complex data not supported: X has dtype torch\.complex64"),
    ],
)
def test_non_numeric_X(bad, match):
    fit_fails(GaussianMixture(1), bad, ValueError, match)


def test_object_array_of_numbers_is_converted(X):
    """An object array of numbers (a data frame's ``.values`` with mixed columns) fits as the float array."""
    as_objects = X.astype(object)
    as_objects[0, 0] = 3  # a Python int among floats
    expected = X.copy()
    expected[0, 0] = 3.0
    fitted = GaussianMixture(K, random_state=0).fit(as_objects)
    reference = GaussianMixture(K, random_state=0).fit(expected)
    np.testing.assert_array_equal(fitted.means_, reference.means_)
    np.testing.assert_array_equal(fitted.predict(as_objects), reference.predict(expected))


def test_object_array_of_other_objects_raises_numpys_type_error(X):
    """scikit-learn lets NumPy's ``TypeError`` through for a dict in an object array; so does torchgmm."""
    bad = X.astype(object)
    bad[0, 0] = {"foo": "bar"}
    fit_fails(GaussianMixture(K), bad, TypeError, r"^X must contain numbers.*argument must be .* string.* number")


def test_fewer_samples_than_components(X):
    fit_fails(
        GaussianMixture(5),
        X[:3],
        ValueError,
        r"Expected n_samples >= n_components but got n_components = 5, n_samples = 3",
    )


# ------------------------------------------------------------------------------------------- *_init


def test_weights_init_wrong_shape(X):
    gm = GaussianMixture(K, weights_init=np.full(K + 1, 1 / (K + 1)))
    fit_fails(
        gm,
        X,
        ValueError,
        "^" + re.escape("The parameter 'weights' should have the shape of (2,), but got (3,) for weights_init."),
    )


@pytest.mark.parametrize("shape", [(K, D + 1), (K + 1, D), (K * D,)])
def test_means_init_wrong_shape(X, shape):
    gm = GaussianMixture(K, means_init=np.zeros(shape))
    expected = f"The parameter 'means' should have the shape of {(K, D)}, but got {shape} for means_init."
    fit_fails(gm, X, ValueError, "^" + re.escape(expected))


@pytest.mark.parametrize(
    "covariance_type, expected, bad",
    [
        ("full", (K, D, D), (K, D)),
        ("full", (K, D, D), (D, D)),
        ("full", (K, D, D), (K + 1, D, D)),
        ("tied", (D, D), (K, D, D)),
        ("tied", (D, D), (D + 1, D + 1)),
        ("diag", (K, D), (K,)),
        ("diag", (K, D), (K, D, D)),
        ("spherical", (K,), (K, D)),
        ("spherical", (K,), (K + 1,)),
    ],
)
def test_precisions_init_wrong_shape(X, covariance_type, expected, bad):
    assert get_covariance_type(covariance_type).shape(K, D) == expected
    gm = GaussianMixture(K, covariance_type=covariance_type, precisions_init=np.ones(bad))
    message = f"The parameter '{covariance_type} precision' should have the shape of {expected}, but got {bad}"
    fit_fails(gm, X, ValueError, "^" + re.escape(message + " for precisions_init."))


def test_weights_init_not_normalised(X):
    gm = GaussianMixture(K, weights_init=[0.3, 0.3])
    fit_fails(
        gm, X, ValueError, r"^The parameter 'weights' should be normalized, but got sum\(weights\) = 0\.60000 for"
    )


def test_weights_init_negative(X):
    gm = GaussianMixture(K, weights_init=[-0.5, 1.5])  # sums to 1
    # the true maximum and minimum, in that order (scikit-learn's own message swaps the two labels)
    fit_fails(
        gm, X, ValueError, r"'weights' should be in the range \[0, 1\], but got max value 1\.50000, min value -0\.50000"
    )


def test_weights_init_nan(X):
    fit_fails(GaussianMixture(K, weights_init=[0.5, np.nan]), X, ValueError, r"'weights_init' contains NaN")


def test_means_init_nan(X):
    means = np.zeros((K, D))
    means[1, 2] = np.nan
    fit_fails(GaussianMixture(K, means_init=means), X, ValueError, r"'means_init' contains NaN or infinity")


def test_means_init_inf_tensor(X):
    means = torch.zeros(K, D)
    means[0, 0] = float("inf")
    fit_fails(GaussianMixture(K, means_init=means), X, ValueError, r"'means_init' contains NaN or infinity")


NOT_SYMMETRIC = np.array([[2.0, 0.5, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
INDEFINITE = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalues 3, 1, -1


@pytest.mark.parametrize("bad", [NOT_SYMMETRIC, INDEFINITE, np.zeros((D, D))], ids=["asym", "indefinite", "zero"])
def test_full_precisions_init_not_spd(X, bad):
    precisions = np.stack([np.eye(D), bad])
    gm = GaussianMixture(K, covariance_type="full", precisions_init=precisions)
    why = "not symmetric" if bad is NOT_SYMMETRIC else "not positive definite"
    fit_fails(
        gm, X, ValueError, rf"'full precision' should be symmetric, positive-definite \(precisions_init\[1\] is {why}\)"
    )


@pytest.mark.parametrize("bad", [NOT_SYMMETRIC, INDEFINITE], ids=["asym", "indefinite"])
def test_tied_precisions_init_not_spd(X, bad):
    gm = GaussianMixture(K, covariance_type="tied", precisions_init=bad)
    why = "not symmetric" if bad is NOT_SYMMETRIC else "not positive definite"
    fit_fails(
        gm, X, ValueError, rf"'tied precision' should be symmetric, positive-definite \(precisions_init is {why}\)"
    )


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_diag_precisions_init_not_positive(X, value):
    precisions = np.ones((K, D))
    precisions[1, 1] = value
    gm = GaussianMixture(K, covariance_type="diag", precisions_init=precisions)
    fit_fails(gm, X, ValueError, rf"'diag precision' should be positive \(precisions_init\[1, 1\] is {value:g}\)")


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_spherical_precisions_init_not_positive(X, value):
    gm = GaussianMixture(K, covariance_type="spherical", precisions_init=[1.0, value])
    fit_fails(gm, X, ValueError, rf"'spherical precision' should be positive \(precisions_init\[1\] is {value:g}\)")


def test_valid_init_parameters_are_accepted(X):
    """The checks above reject only bad values: well-formed ones of every type fit."""
    for covariance_type in ("full", "tied", "diag", "spherical"):
        precisions = identity_precisions(covariance_type, K, D)
        gm = GaussianMixture(
            K,
            covariance_type=covariance_type,
            weights_init=[0.25, 0.75],
            means_init=np.stack([np.full(D, -4.0), np.full(D, 4.0)]),
            precisions_init=precisions,
        ).fit(X)
        assert np.isfinite(gm.means_).all()


# ---------------------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    "params, match",
    [
        ({"covariance_type": "foo"}, r"Invalid value for 'covariance_type': 'foo'"),
        ({"covariance_type": ["full"]}, r"Invalid value for 'covariance_type'"),
        ({"init_params": "kmeans++"}, r"Invalid value for 'init_params': 'kmeans\+\+'"),
        ({"init_params": None}, r"Invalid value for 'init_params': None"),
        ({"n_components": 0}, r"'n_components' must be >= 1, got 0"),
        ({"n_init": 0}, r"'n_init' must be >= 1, got 0"),
        ({"tol": -1}, r"'tol' must be >= 0, got -1"),
        ({"tol": float("nan")}, r"'tol' must be finite"),
        ({"reg_covar": -1}, r"'reg_covar' must be >= 0, got -1"),
        ({"reg_covar": float("inf")}, r"'reg_covar' must be finite"),
        ({"max_iter": -1}, r"'max_iter' must be >= 0, got -1"),
        ({"verbose": -1}, r"'verbose' must be >= 0"),
        ({"verbose_interval": 0}, r"'verbose_interval' must be >= 1"),
        ({"random_state": -1}, r"'random_state' must be a non-negative int"),
        ({"matmul_precision": "tf32"}, r"Invalid value for 'matmul_precision': 'tf32'\. It must be None or one of"),
    ],
)
def test_bad_parameter_value(X, params, match):
    fit_fails(GaussianMixture(**{"n_components": K, **params}), X, ValueError, match)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_components": 1.5}, r"'n_components' must be of type int, got 1\.5 of type float"),
        ({"n_components": True}, r"'n_components' must be of type int, got True of type bool"),
        ({"max_iter": 10.0}, r"'max_iter' must be of type int"),
        ({"n_init": "3"}, r"'n_init' must be of type int"),
        ({"tol": "0.1"}, r"'tol' must be of type float"),
        ({"warm_start": 1}, r"'warm_start' must be of type bool"),
        ({"random_state": "seed"}, r"'random_state' must be None, an int"),
    ],
)
def test_bad_parameter_type(X, params, match):
    fit_fails(GaussianMixture(**{"n_components": K, **params}), X, TypeError, match)


@pytest.mark.parametrize("dtype", ["float16", torch.float16, np.float16, "int32", "double"])
def test_bad_dtype(X, dtype):
    fit_fails(
        GaussianMixture(K, dtype=dtype), X, ValueError, r"Invalid value for 'dtype'.*Use None, 'float32' or 'float64'"
    )


@pytest.mark.parametrize("device", ["gpu", "not-a-device", "cpu:x"])
def test_bad_device_string(X, device):
    fit_fails(GaussianMixture(K, device=device), X, ValueError, r"Invalid value for 'device'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_requested_but_unavailable(X, device):
    fit_fails(GaussianMixture(K, device=device), X, ValueError, r"CUDA is not available")


# ---------------------------------------------------------------------------------------- unfitted


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score", "score_samples", "bic", "aic", "sample"])
def test_not_fitted(X, method):
    gm = GaussianMixture(K)
    args = () if method == "sample" else (X,)
    with pytest.raises(NotFittedError, match=r"This GaussianMixture instance is not fitted yet") as info:
        getattr(gm, method)(*args)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, AttributeError)
    assert_unfitted(gm)


def test_not_fitted_error_is_exported():
    assert torchgmm.NotFittedError is NotFittedError
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    # code written for either base class catches it
    with pytest.raises(AttributeError):
        GaussianMixture().predict(np.zeros((1, 1)))


def test_not_fitted_wins_over_bad_X():
    with pytest.raises(NotFittedError):
        GaussianMixture().predict(np.array([np.nan]))


# -------------------------------------------------------------------------------------- after fit


@pytest.fixture
def fitted(X):
    return GaussianMixture(K, random_state=0).fit(X)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score", "score_samples", "bic", "aic"])
@pytest.mark.parametrize("n_features", [D - 1, D + 1])
def test_wrong_number_of_features_after_fit(fitted, method, n_features):
    X_new = np.zeros((5, n_features))
    with pytest.raises(
        ValueError, match=rf"X has {n_features} features, but GaussianMixture is expecting {D} features"
    ):
        getattr(fitted, method)(X_new)


def test_wrong_number_of_features_tensor(fitted):
    with pytest.raises(ValueError, match=r"features"):
        fitted.predict(torch.zeros(5, D + 2))


def test_non_finite_X_at_predict(fitted, X):
    X = X.copy()
    X[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"row 2, column 0"):
        fitted.predict(X)


@pytest.mark.parametrize("n_samples", [0, -3, 2.5, True, "10"])
def test_sample_bad_count(fitted, n_samples):
    with pytest.raises(ValueError, match=r"Invalid value for 'n_samples'.*at least one sample"):
        fitted.sample(n_samples)


def test_set_params_unknown_name():
    gm = GaussianMixture(K)
    with pytest.raises(ValueError, match=r"Invalid parameter 'n_component' for estimator GaussianMixture"):
        gm.set_params(n_component=3)
    assert not hasattr(gm, "n_component")
    assert gm.n_components == K


def test_set_params_unknown_name_after_valid_ones_is_rejected():
    with pytest.raises(ValueError, match=r"Valid parameters are"):
        GaussianMixture().set_params(tol=0.5, bogus=1)


def test_warm_start_with_other_number_of_features(X):
    gm = GaussianMixture(K, warm_start=True, random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"X has 2 features, but the warm-started GaussianMixture was fitted on 3"):
        gm.fit(X[:, :2])
    assert gm.n_features_in_ == D


# ------------------------------------------------------------------------------- failed fits

FAILED_FIT = r"every restart produced non-finite statistics.*Scale the input data"


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data"])
def test_every_restart_fails_when_squares_overflow(covariance_type, init_params):
    X = 1e200 * np.random.default_rng(0).normal(size=(30, D))
    gm = GaussianMixture(2, covariance_type=covariance_type, n_init=3, init_params=init_params, random_state=0)
    with pytest.raises(ValueError, match=FAILED_FIT) as info:
        gm.fit(X)
    # float64 input: no advice to pass float64 data
    assert "float64" not in str(info.value)
    assert_unfitted(gm)


def test_every_restart_fails_float32_advises_float64():
    """Variances of 1e40 do not fit in float32: the fit fails, and says float64 would do."""
    gm = GaussianMixture(2)
    X = 1e20 * torch.randn(30, D, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=FAILED_FIT + r".*passing float64 data"):
        gm.fit(X)
    assert_unfitted(gm)
    assert np.isfinite(GaussianMixture(2, random_state=0).fit(X.double()).covariances_).all()


def test_degenerate_fit_is_fine_with_reg_covar():
    """Constant data with the default reg_covar need no repair: the covariance is reg_covar * I."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm = GaussianMixture(1, covariance_type="full", reg_covar=1e-6).fit(np.ones((20, 2)))
    np.testing.assert_allclose(gm.means_, [[1.0, 1.0]])
    np.testing.assert_allclose(gm.covariances_, [1e-6 * np.eye(2)], rtol=1e-6)
    assert gm.repairs_ == []


def test_failed_refit_keeps_previous_fit(X):
    """A fit that fails leaves the attributes of the previous successful fit untouched."""
    gm = GaussianMixture(K, random_state=0).fit(X)
    before = attribute_values(gm)
    assert before.keys() == set(FITTED_ATTRIBUTES)
    labels = gm.predict(X)
    gm.set_params(n_components=1)
    with pytest.raises(ValueError, match=FAILED_FIT):
        gm.fit(1e200 * X)
    assert_same_attributes(before, attribute_values(gm))
    gm.set_params(n_components=K)
    np.testing.assert_array_equal(gm.predict(X), labels)


def test_failed_refit_with_bad_input_keeps_previous_fit(X):
    gm = GaussianMixture(K, random_state=0).fit(X)
    means = gm.means_.copy()
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="row 0, column 0"):
        gm.fit(bad)
    np.testing.assert_array_equal(gm.means_, means)


def test_some_restarts_fail_at_trainer_level():
    """``run_em`` drops restarts marked failed by ``ok`` and runs the others, unaffected."""
    rng = np.random.default_rng(0)
    X = torch.as_tensor(np.concatenate([rng.normal(-3, 1, (60, 2)), rng.normal(3, 1, (60, 2))]))
    covariance = get_covariance_type("full")
    data = scanned(X, torch.float64)
    generator = torch.Generator().manual_seed(0)
    params, ok = initial("kmeans", data, 2, 3, covariance, 1e-6, generator)
    assert all(ok)
    ok = [True, False, True]
    result = run_restarts(data, params, covariance, tol=1e-6, reg_covar=1e-6, max_iter=100, ok=ok)
    assert result.failed == [False, True, False]
    assert result.lower_bound[1] == -math.inf
    assert result.lower_bounds[1] == [] and result.n_iter[1] == 0 and not result.converged[1]
    assert all(math.isfinite(result.lower_bound[r]) and result.converged[r] for r in (0, 2))
    assert result.best() in (0, 2)
    # the surviving restarts are exactly what they are when run alone
    alone = run_restarts(data, params.select(torch.tensor([0])), covariance, tol=1e-6, reg_covar=1e-6, max_iter=100)
    assert alone.lower_bounds[0] == pytest.approx(result.lower_bounds[0], rel=1e-12)
    np.testing.assert_allclose(alone.params.means[0], result.params.means[0], rtol=1e-10)
    # with every restart marked failed there is no best restart
    none_ok = run_restarts(data, params, covariance, tol=1e-6, reg_covar=1e-6, max_iter=100, ok=[False] * 3)
    assert none_ok.best() is None and none_ok.failed == [True] * 3


# ------------------------------------------------------------------------------------ convergence


def test_convergence_warning_when_max_iter_too_small(X):
    with pytest.warns(ConvergenceWarning, match=r"did not converge.*increase max_iter"):
        gm = GaussianMixture(K, max_iter=1, tol=0.0, random_state=0).fit(X)
    assert not gm.converged_
    assert gm.n_iter_ == 1


def test_no_convergence_warning_when_max_iter_zero(X):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm = GaussianMixture(K, max_iter=0, random_state=0).fit(X)
    assert gm.n_iter_ == 0
    assert gm.lower_bounds_ == []
    assert np.isfinite(gm.means_).all()


def test_no_warning_when_converged(X):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm = GaussianMixture(K, max_iter=200, random_state=0).fit(X)
    assert gm.converged_


def test_sparse_X_is_rejected_with_advice():
    sparse = pytest.importorskip("scipy.sparse")
    fit_fails(GaussianMixture(1), sparse.csr_matrix(np.eye(5)), TypeError, r"Sparse X is not supported.*toarray")


def test_object_array_of_numbers_is_accepted():
    X = np.array([[1, 2.5], [3, 4.0], [0.5, 1], [2, 2]], dtype=object)
    gm = GaussianMixture(1).fit(X)
    np.testing.assert_allclose(gm.means_[0], X.astype(float).mean(0))


@pytest.mark.parametrize("method", ["fit", "fit_predict"])
def test_warnings_point_at_the_callers_line(method):
    X = np.random.default_rng(0).normal(size=(100, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(GaussianMixture(2, max_iter=1, tol=0.0, random_state=0), method)(X)
    assert [w.filename for w in caught if issubclass(w.category, ConvergenceWarning)] == [__file__]


def test_bad_matmul_precision_at_predict_leaves_torch_setting(X):
    gm = GaussianMixture(K, random_state=0).fit(X)
    gm.matmul_precision = "low"
    with pytest.raises(ValueError, match=r"Invalid value for 'matmul_precision': 'low'"):
        gm.predict(X)
    assert torch.get_float32_matmul_precision() == "highest"
