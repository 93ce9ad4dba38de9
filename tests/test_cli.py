"""The installed ``torchgmm`` command (the README's main job)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from torchgmm.cli import adjusted_rand_index

COMMAND = [shutil.which("torchgmm")] if shutil.which("torchgmm") else [sys.executable, "-m", "torchgmm"]


def run(*args):
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=120)


def test_fit_on_shipped_iris_prints_what_was_found():
    out = run("fit", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert "iris" in out.stdout and "K=3" in out.stdout
    assert re.search(r"converged\s+\d/4 restarts", out.stdout)
    ari = float(re.search(r"adjusted Rand index ([0-9.]+)", out.stdout).group(1))
    assert ari > 0.85  # a full-covariance mixture recovers the species well


def test_fit_on_a_csv_file_with_header(tmp_path):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-4, 1, (60, 2)), rng.normal(4, 1, (40, 2))])
    path = tmp_path / "points.csv"
    np.savetxt(path, X, delimiter=",", header="a,b", comments="")
    out = run("fit", str(path), "-k", "2", "--covariance-type", "diag", "--dtype", "float32")
    assert out.returncode == 0, out.stderr
    assert "100 rows x 2 columns" in out.stdout and "covariance_type=diag" in out.stdout
    assert "float32" in out.stdout


def test_missing_file_is_one_clear_line(tmp_path):
    out = run("fit", str(tmp_path / "nope.npy"))
    assert out.returncode != 0
    assert "cannot read" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("seed", range(5))
def test_adjusted_rand_index_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 4, 200), rng.integers(0, 3, 200)
    b[:120] = a[:120] % 3
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
