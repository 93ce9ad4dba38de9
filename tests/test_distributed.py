"""Fitting on shards with torch.distributed (2 CPU processes, gloo on loopback) equals one process on all rows."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from _distributed_worker import fit_shard
from conftest import COVARIANCE_TYPES, make_blobs

from torchgmm import GaussianMixture

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(shards, kwargs_per_rank, tmp_path):
    world_size = len(shards)
    mp.start_processes(
        fit_shard,
        args=(world_size, _free_port(), shards, kwargs_per_rank, str(tmp_path)),
        nprocs=world_size,
        start_method="spawn",
        join=True,
    )
    errors = [tmp_path / f"rank{r}.err" for r in range(world_size)]
    if any(e.exists() for e in errors):
        return None, [e.read_text() if e.exists() else "" for e in errors]
    return [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(world_size)], None


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_two_ranks_match_one_process(covariance_type, tmp_path):
    X, _ = make_blobs(150, 3, 3, 3.0, seed=0)
    kwargs = dict(n_components=3, covariance_type=covariance_type, n_init=2, random_state=0, tol=1e-6, batch_size=64)
    whole = GaussianMixture(**kwargs).fit(X)
    shards = [X[:170], X[170:]]  # uneven shards
    results, errors = run_ranks(shards, [kwargs, kwargs], tmp_path)
    assert errors is None, errors
    for r in results:
        assert int(r["n_iter"]) == whole.n_iter_
        np.testing.assert_allclose(r["lower_bounds"], whole.lower_bounds_, rtol=1e-6)
        np.testing.assert_allclose(r["means"], whole.means_, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(r["covariances"], whole.covariances_, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(r["weights"], whole.weights_, rtol=1e-6)
    # every rank ends with the identical model and labels its own rows
    np.testing.assert_array_equal(results[0]["means"], results[1]["means"])
    np.testing.assert_array_equal(np.concatenate([r["labels"] for r in results]), whole.predict(X))


def test_ranks_that_disagree_fail_with_the_same_message(tmp_path):
    X, _ = make_blobs(50, 2, 2, 3.0, seed=1)
    kwargs = [dict(n_components=2, random_state=0), dict(n_components=3, random_state=0)]
    results, errors = run_ranks([X[:50], X[50:]], kwargs, tmp_path)
    assert results is None
    first_lines = [e.splitlines()[0] for e in errors]
    assert first_lines[0] == first_lines[1]
    assert "ranks disagree on n_components (rank 0: 2, rank 1: 3)" in first_lines[0]


def test_ranks_with_different_feature_counts_fail_on_every_rank(tmp_path):
    X, _ = make_blobs(50, 3, 2, 3.0, seed=2)
    kwargs = dict(n_components=2, random_state=0)
    results, errors = run_ranks([X[:50], X[50:, :2]], [kwargs, kwargs], tmp_path)
    assert results is None
    assert all("ranks disagree on n_features (rank 0: 3, rank 1: 2)" in e for e in errors)
