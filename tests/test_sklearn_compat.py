"""Code written for ``sklearn.mixture.GaussianMixture`` works with ``torchgmm.GaussianMixture``.

- scikit-learn's own test module for ``GaussianMixture``, from the installed scikit-learn, run against
  torchgmm's estimator (``tests/_sklearn_suite_plugin.py`` swaps the class and lists the exceptions);
- ``check_estimator``: every check scikit-learn's own estimator passes, torchgmm's passes;
- the not-fitted error and the convergence warning are scikit-learn's classes when scikit-learn is imported,
  and ``import torchgmm`` never imports scikit-learn;
- the parts of scikit-learn's tests that sit behind an expected failure, checked here.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import sklearn
import sklearn.exceptions
from sklearn.utils.validation import check_is_fitted

from torchgmm import ConvergenceWarning, DegenerateComponentWarning, GaussianMixture, NotFittedError
from torchgmm.exceptions import compatible

TESTS = Path(__file__).resolve().parent
SKLEARN_SUITE = Path(sklearn.__file__).parent / "mixture" / "tests" / "test_gaussian_mixture.py"

sys.path.insert(0, str(TESTS))
from _sklearn_suite_plugin import EXPECTED_FAILURES  # noqa: E402

sys.path.remove(str(TESTS))

# Why a test of scikit-learn's module may be skipped here: a library or device this machine lacks.
ALLOWED_SKIPS = re.compile(
    r"(cupy|dpnp) is not installed|requires cuda, which is not available|no XPU device|"
    r"PYTORCH_ENABLE_MPS_FALLBACK is not set|MPS"
)


def _run(code: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# ------------------------------------------------------------------ scikit-learn's own test module


def test_sklearn_gaussian_mixture_tests_pass(tmp_path):
    """Every test of scikit-learn's ``test_gaussian_mixture.py`` passes on torchgmm, but the listed ones.

    float32 and array API variants run too (``SKLEARN_RUN_FLOAT32_TESTS``, ``SCIPY_ARRAY_API``): torch and
    array-api-strict inputs give outputs in their own namespace. Skips are allowed only for a library or a
    device this machine does not have.
    """
    assert SKLEARN_SUITE.exists(), f"scikit-learn {sklearn.__version__} has no {SKLEARN_SUITE}"
    report = tmp_path / "report.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "SKLEARN_RUN_FLOAT32_TESTS": "1",
        "SCIPY_ARRAY_API": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "_sklearn_suite_plugin", "-p", "no:cacheprovider"]
        + ["-W", "ignore", f"--junitxml={report}", "--tb=short", str(SKLEARN_SUITE)],
        cwd=tmp_path,  # not the checkout: its pytest settings and conftest are for torchgmm's own tests
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

    passed, expected_failures, skips = [], set(), []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name")
        skipped = case.find("skipped")
        if skipped is None:
            passed.append(name)
        elif skipped.get("type") == "pytest.xfail":
            expected_failures.add(name.split("[", 1)[0])
        else:
            skips.append(f"{name}: {skipped.get('message')}")
    assert not [s for s in skips if not ALLOWED_SKIPS.search(s)], "\n".join(skips)
    # every listed exception is still needed (a listed test that passes is reported as failed above)
    assert expected_failures == set(EXPECTED_FAILURES)
    assert len(passed) >= 140, len(passed)  # 144 with scikit-learn 1.9 and array-api-strict installed
    assert any("array_api_strict" in name for name in passed) and any("torch-cpu" in name for name in passed)


def test_the_exceptions_are_documented():
    """docs/python.md lists every test of scikit-learn's module that torchgmm does not pass, with its reason."""
    text = (TESTS.parent / "docs" / "python.md").read_text()
    for name in EXPECTED_FAILURES:
        assert f"`{name}`" in text, name


def test_check_weights_messages_in_sklearn_words():
    """The shape and normalisation parts of scikit-learn's ``test_check_weights`` (behind its expected
    failure), and of ``test_check_means``/``test_check_precisions``, with scikit-learn's patterns."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(60, 2))
    bad_shape = rng.rand(2, 1)
    with pytest.raises(
        ValueError, match=re.escape("The parameter 'weights' should have the shape of (2,), but got (2, 1)")
    ):
        GaussianMixture(2, weights_init=bad_shape).fit(X)
    bad_norm = rng.rand(2)
    bad_norm = bad_norm / (bad_norm.sum() + 1)
    message = f"The parameter 'weights' should be normalized, but got sum(weights) = {np.sum(bad_norm):.5f}"
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(2, weights_init=bad_norm).fit(X)
    with pytest.raises(ValueError, match="The parameter 'tied precision' should have the shape of"):
        GaussianMixture(2, covariance_type="tied", precisions_init=np.ones((3, 3))).fit(X)
    with pytest.raises(ValueError, match="'diag precision' should be positive"):
        GaussianMixture(2, covariance_type="diag", precisions_init=np.full((2, 2), -1.0)).fit(X)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_collapsed_data_is_repaired_where_sklearn_raises(covariance_type):
    """scikit-learn's ``test_regularisation`` data: with reg_covar=0 torchgmm repairs (and says so) where
    scikit-learn raises; with reg_covar=1e-6 both fit, as the test's second half asks."""
    X = np.vstack((np.ones((5, 5)), np.zeros((5, 5))))
    gm = GaussianMixture(10, reg_covar=0, covariance_type=covariance_type, random_state=np.random.RandomState(0))
    with pytest.warns(DegenerateComponentWarning, match="repaired"):
        gm.fit(X)
    assert gm.repairs_ and np.isfinite(gm.lower_bound_)
    assert np.all(np.isfinite(gm.precisions_cholesky_)) and np.isclose(gm.weights_.sum(), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.set_params(reg_covar=1e-6).fit(X)
    assert np.isfinite(gm.lower_bound_) and set(gm.predict(X)[:5]).isdisjoint(gm.predict(X)[5:])


# ------------------------------------------------------------------ check_estimator

_CHECKS = """
    import json, warnings
    warnings.simplefilter("ignore")
    from sklearn.mixture import GaussianMixture as Theirs
    from sklearn.utils.estimator_checks import check_estimator
    from torchgmm import GaussianMixture as Ours

    def statuses(estimator):
        results = check_estimator(estimator, on_fail=None)
        return {r["check_name"]: [r["status"], repr(r["exception"])[:500]] for r in results}

    print(json.dumps({"theirs": statuses(Theirs()), "ours": statuses(Ours())}))
"""


def test_check_estimator_passes_every_check_sklearns_own_estimator_passes():
    result = _run(_CHECKS, env={"SCIPY_ARRAY_API": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    theirs, ours = found["theirs"], found["ours"]
    passed_by_sklearn = {name for name, (status, _) in theirs.items() if status == "passed"}
    assert len(passed_by_sklearn) >= 40
    failing = {
        name: ours.get(name, ["missing", ""]) for name in passed_by_sklearn if ours.get(name, [""])[0] != "passed"
    }
    assert not failing, failing
    assert "check_array_api_input" in passed_by_sklearn  # the array API check ran, not skipped


# ------------------------------------------------------------------ scikit-learn's classes


def test_not_fitted_error_is_sklearns_when_sklearn_is_imported():
    methods = [
        lambda gm: gm.predict(np.zeros((3, 2))),
        lambda gm: gm.predict_proba(np.zeros((3, 2))),
        lambda gm: gm.score(np.zeros((3, 2))),
        lambda gm: gm.score_samples(np.zeros((3, 2))),
        lambda gm: gm.bic(np.zeros((3, 2))),
        lambda gm: gm.sample(2),
        lambda gm: gm.to_module(),
    ]
    for call in methods:
        with pytest.raises(sklearn.exceptions.NotFittedError, match="This GaussianMixture instance is not fitted"):
            call(GaussianMixture(2))
        with pytest.raises(NotFittedError) as info:  # torchgmm's own class catches it too
            call(GaussianMixture(2))
        assert isinstance(info.value, (ValueError, AttributeError))
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(GaussianMixture(2))
    check_is_fitted(GaussianMixture(1, random_state=0).fit(np.random.default_rng(0).normal(size=(20, 2))))


def test_the_compatible_class_keeps_the_name_and_survives_pickling():
    error_class = compatible(NotFittedError)
    assert error_class is compatible(NotFittedError)  # built once per process
    assert issubclass(error_class, NotFittedError) and issubclass(error_class, sklearn.exceptions.NotFittedError)
    assert error_class.__name__ == "NotFittedError" and error_class.__module__ == "torchgmm.exceptions"
    with pytest.raises(NotFittedError) as info:
        GaussianMixture(2).predict(np.zeros((1, 2)))
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is error_class and again.args == info.value.args
    warning_class = compatible(ConvergenceWarning)
    assert issubclass(warning_class, ConvergenceWarning)
    assert issubclass(warning_class, sklearn.exceptions.ConvergenceWarning)
    with pytest.raises(ValueError, match="takes NotFittedError or ConvergenceWarning"):
        compatible(DegenerateComponentWarning)


def _not_converged(X):
    return GaussianMixture(3, max_iter=1, tol=0.0, random_state=0).fit(X)


def test_convergence_warning_is_sklearns_when_sklearn_is_imported():
    X = np.random.default_rng(0).normal(size=(200, 2))
    with pytest.warns(sklearn.exceptions.ConvergenceWarning, match="did not converge"):
        _not_converged(X)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        _not_converged(X)
    for category in (sklearn.exceptions.ConvergenceWarning, ConvergenceWarning):
        with warnings.catch_warnings():  # a filter on either class silences it, as users write them
            warnings.simplefilter("error")
            warnings.filterwarnings("ignore", category=category)
            _not_converged(X)


def test_import_torchgmm_does_not_import_sklearn_and_uses_its_own_classes():
    result = _run(
        """
        import sys, warnings
        import numpy as np
        import torchgmm
        assert "sklearn" not in sys.modules, "import torchgmm imported scikit-learn"
        try:
            torchgmm.GaussianMixture(2).predict(np.zeros((1, 2)))
        except torchgmm.NotFittedError as error:
            assert type(error) is torchgmm.NotFittedError, type(error).__mro__
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            X = np.random.default_rng(0).normal(size=(90, 2))
            torchgmm.GaussianMixture(3, max_iter=1, tol=0.0, random_state=0).fit(X)
        assert [w.category for w in caught] == [torchgmm.ConvergenceWarning], caught
        assert "sklearn" not in sys.modules, "fitting imported scikit-learn"

        import sklearn.exceptions  # imported later: from now on the errors are scikit-learn's too
        try:
            torchgmm.GaussianMixture(2).sample()
        except sklearn.exceptions.NotFittedError as error:
            assert isinstance(error, torchgmm.NotFittedError)
        print("ok")
        """
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


# ------------------------------------------------------------------ array API inputs


def test_array_api_strict_input_gives_outputs_in_its_namespace():
    xp = pytest.importorskip("array_api_strict")
    X = np.random.default_rng(0).normal(size=(120, 3))
    device = xp.Device("device1")
    X_xp = xp.asarray(X, device=device)
    gm = GaussianMixture(2, random_state=0).fit(X_xp)
    reference = GaussianMixture(2, random_state=0).fit(X)
    assert type(gm.means_) is type(X_xp) and gm.means_.device == device
    np.testing.assert_allclose(np.from_dlpack(gm.means_), reference.means_, rtol=1e-12)
    for out, expected in [
        (gm.predict(X_xp), reference.predict(X)),
        (gm.predict_proba(X_xp), reference.predict_proba(X)),
        (gm.score_samples(X_xp), reference.score_samples(X)),
    ]:
        assert type(out) is type(X_xp) and out.device == device
        np.testing.assert_allclose(np.from_dlpack(out), expected, rtol=1e-12)
    assert isinstance(gm.score(X_xp), float)
    sample, labels = gm.sample(5)
    assert type(sample) is type(X_xp) and sample.device == device and labels.device == device
    np.testing.assert_allclose(gm.predict(X), reference.predict(X))  # a NumPy X on an array API model
