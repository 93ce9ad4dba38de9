"""The README's Python examples run as written on a CPU-only machine, and say what they claim.

Every ```python block of README.md runs in a fresh namespace (with CUDA hidden, as on a machine without a
GPU); the blocks whose comments state a result are checked against it: the number of components BIC picks,
the adjusted Rand index before and after scaling, and the repairs a degenerate fit reports.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from torchgmm import ConvergenceWarning, GaussianMixture

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _run(code: str, monkeypatch) -> dict:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only machine
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exec(compile(code, "README.md", "exec"), namespace)
    return namespace


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs_on_cpu(index, monkeypatch, capsys):
    _run(BLOCKS[index], monkeypatch)


def _block(marker: str) -> str:
    [code] = [block for block in BLOCKS if marker in block]
    return code


def test_choosing_k_picks_the_three_clusters(monkeypatch):
    namespace = _run(_block("GaussianMixtureSelection("), monkeypatch)
    assert namespace["best"] == {"n_components": 3, "covariance_type": "spherical"}
    # the same choice as looping over the candidates by hand
    X = namespace["X"]
    bic = {
        (k, t): GaussianMixture(k, covariance_type=t, n_init=2, random_state=0).fit(X).bic(X)
        for t in ("full", "tied", "diag", "spherical")
        for k in range(1, 7)
    }
    assert min(bic, key=bic.get) == (3, "spherical")


def test_scaling_recovers_the_clusters_raw_data_hide(monkeypatch):
    namespace = _run(_block("StandardScaler"), monkeypatch)
    X, labels = namespace["X"], namespace["labels"]
    scaled = adjusted_rand_score(labels, namespace["model"].predict(X))
    raw = adjusted_rand_score(labels, GaussianMixture(4, n_init=8, random_state=0).fit(X).predict(X))
    assert scaled > 0.99 and raw < 0.8, (scaled, raw)  # the README says 1.0 and 0.72


def test_warnings_example_reports_its_repairs(monkeypatch, capsys):
    namespace = _run(_block("gm.repairs_"), monkeypatch)
    printed = capsys.readouterr().out.splitlines()
    assert namespace["gm"].repairs_ and len(printed) == len(namespace["gm"].repairs_)
    assert all(
        re.fullmatch(r"component \d (regularised \(reg_covar \S+\)|reseeded) at iteration \d+", p) for p in printed
    )
