"""Fitting on shards with torch.distributed (2 CPU processes, gloo on loopback) against one process on all rows.

Covers: two ranks end with the model one process fits on all rows (four covariance types, uneven shards,
labels); every parameter the ranks must agree on fails with the same message on every rank (``fit`` and
``partial_fit``); an error on one rank only (an empty shard, a NaN, a checkpoint it refuses) raised on every
rank, after which the group goes on; rank 0's seed is the one every rank uses (``fit`` and the first
``partial_fit``); the seeding sample merged across ranks when the data exceed it (``DataSource.sample``
itself, and the initialisations built on it); checkpoints, written by rank 0 and read by every rank, that
resume to exactly the uninterrupted fit, also when the ranks were given different ``random_state``.

Starting a process group costs seconds, so every scenario runs in ONE group (a module fixture, see
``tests/_distributed_worker.py``); the tests then compare what each rank recorded with a reference computed
here in one process. Data are float64, so two ranks agree with one process to rounding (sums grouped by
shard instead of by chunk): rtol 1e-10 unless stated.
"""

from __future__ import annotations

import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _distributed_worker import run_scenarios
from conftest import COVARIANCE_TYPES, make_blobs

from torchgmm import GaussianMixture, distributed
from torchgmm.data import TensorSource, scan
from torchgmm.init import _SEEDING_ROWS

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

RTOL = 1e-10

# 450 rows, D=3, split 170 / 280 (uneven shards).
BLOBS, _ = make_blobs(150, 3, 3, 3.0, seed=0)
BLOBS_SHARDS = [BLOBS[:170], BLOBS[170:]]
# 100 rows, D=2, for the parameters the ranks disagree on.
SMALL, _ = make_blobs(50, 2, 2, 3.0, seed=1)
SMALL_SHARDS = [SMALL[:50], SMALL[50:]]
# 400 overlapping rows, D=2, split 250 / 150: initialisations that depend on the seed.
SEEDED, _ = make_blobs(100, 2, 4, 2.0, seed=3)
SEEDED_SHARDS = [SEEDED[:250], SEEDED[250:]]
# Two partial_fit batches, each split unevenly between the ranks.
ONLINE_BATCHES = [SEEDED[:150], SEEDED[150:]]
ONLINE_SHARDS = [[SEEDED[:90], SEEDED[150:200]], [SEEDED[90:150], SEEDED[200:]]]
# 300k rows, D=2, split 110k / 190k: well over the seeding sample of _SEEDING_ROWS rows, and each rank's
# share of the global sample differs from half of it.
BIG, _ = make_blobs(100_000, 2, 3, 4.0, seed=5)
BIG_SHARDS = [BIG[:110_000], BIG[110_000:]]
# 300 overlapping rows, D=2, split 130 / 170: a fit of many iterations, stopped and resumed.
CHECKPOINTED, _ = make_blobs(100, 2, 3, 1.5, seed=6)
CHECKPOINTED_SHARDS = [CHECKPOINTED[:130], CHECKPOINTED[130:]]

MATCH_PARAMS = dict(n_components=3, n_init=2, random_state=0, tol=1e-6, batch_size=64)
# annealing (tempered passes) and split-and-merge rounds (their scores and moved statistics summed over ranks)
AUTO_PARAMS = dict(n_components=5, n_init=4, random_state=0, tol=1e-6, batch_size=64, strategy="auto")
# row weights: the weighted seeding sample, Lloyd and EM, and their total, over ranks
WEIGHTS = np.random.default_rng(7).integers(0, 4, len(BLOBS)).astype(np.float64)
# the same weights carried by (rows, weights) batches, from given means: equal to the repeated rows
WEIGHTED_CHUNK_PARAMS = dict(
    MATCH_PARAMS,
    n_init=1,
    weights_init=np.full(3, 1 / 3),
    means_init=BLOBS[np.argsort(BLOBS[:, 0])[[10, 150, 290]]],
    precisions_init=np.stack([np.eye(3)] * 3),
)
# held means and weights: the constrained M-step on statistics summed over ranks
FIXED_PARAMS = dict(MATCH_PARAMS, means_init=BLOBS[[0, 1, 2]], fixed_params="wm")
SEED_INITS = ["random", "kmeans", "random_from_data", "k-means++"]
SEED_PARAMS = dict(n_components=4, n_init=2, max_iter=2)
ONLINE_INITS = ["random", "kmeans", "random_from_data"]
BIG_INITS = ["kmeans", "k-means++", "random_from_data"]
# iteration 1's bound is the initial model's; with 4 components on 3 blobs the restarts' bounds differ clearly
# (tied restarts would leave the one kept to rounding)
BIG_PARAMS = dict(n_components=4, n_init=2, max_iter=1, random_state=0)
CHECKPOINT_PARAMS = dict(
    n_components=3,
    n_init=2,
    init_params="random_from_data",
    tol=1e-8,
    max_iter=60,
    random_state=1,
    batch_size=64,
    checkpoint_interval=2,
)
STOP_AT = 5

# Parameter -> (rank 1's change to rank 0's arguments, the values the message names).
DISAGREEMENTS = {
    "n_components": (dict(n_components=3), "(rank 0: 2, rank 1: 3)"),
    "covariance_type": (dict(covariance_type="diag"), "(rank 0: 'full', rank 1: 'diag')"),
    "n_init": (dict(n_init=2), "(rank 0: 1, rank 1: 2)"),
    "dtype": (dict(dtype="float32"), "(rank 0: 'torch.float64', rank 1: 'torch.float32')"),
    "batch_size": (dict(batch_size=32), "(rank 0: None, rank 1: 32)"),
    "initial_parameters": (dict(means_init=[[-3.0, 0.0], [3.0, 0.0]]), "(rank 0: [], rank 1: ['means_init'])"),
}
# The same for partial_fit, which checks them all but n_init (it runs one restart), and the number of earlier
# updates (rank 1 updates an estimator that made one).
ONLINE_DISAGREEMENTS = {
    **{name: DISAGREEMENTS[name] for name in ("n_components", "covariance_type", "dtype", "batch_size")},
    "n_iter_": (None, "(rank 0: None, rank 1: 1)"),
}
# Scenario -> (the one rank that fails, the start of its message); every other rank raises
# "Distributed fit: rank R failed: " and that message.
FAILURES = {
    "fail-empty-shard": (
        1,
        "Found array with 0 sample(s) (shape=(0, 2)) while a minimum of 1 is required: X has no rows.",
    ),
    "fail-nan-chunks": (
        0,
        "Input X contains NaN (chunk 1, row 3 of the chunk (row 28 of X), column 1); remove or impute those values.",
    ),
    "fail-nan-online": (1, "Input X contains NaN (first at row 0, column 0); remove or impute those values."),
    "fail-checkpoint": (1, "{folder}/refused.garbage is not a readable torchgmm checkpoint ("),
}
# Case -> (shards, sample size, seed) of DataSource.sample.
SAMPLES = {
    "big-seeding": (BIG_SHARDS, _SEEDING_ROWS, 7),
    "big-1000": (BIG_SHARDS, 1000, 11),
    "small-all": (BLOBS_SHARDS, 1000, 3),  # more than the rows: every row, in key order
    "small-200": (BLOBS_SHARDS, 200, 3),  # rank 0 pads its 170 rows, rank 1 keeps 200 of 280
    "small-100": (BLOBS_SHARDS, 100, 3),
}


def _fit(X, params):
    return ("fit", [dict(X=X[0], params=params[0]), dict(X=X[1], params=params[1])])


def _warm(params):
    """A GaussianMixture fitted (on one process) with ``params``, for a warm start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixture(**params).fit(SMALL)


def _both(value):
    return [value, value]


def _with_nan(X: np.ndarray, row: int, col: int) -> np.ndarray:
    X = X.copy()
    X[row, col] = np.nan
    return X


def scenarios(folder: Path) -> list:
    """Every scenario, in the order the ranks run them: ``(name, kind, arguments per rank)``."""
    out = []
    # Disagreements first: the group must stay usable for everything after them.
    base = dict(n_components=2, random_state=0)
    for name, (change, _) in DISAGREEMENTS.items():
        out.append((f"disagree-{name}", *_fit(SMALL_SHARDS, [base, {**base, **change}])))
    out.append(("disagree-n_features", *_fit([SMALL[:50], SMALL[50:, :1]], _both(base))))
    # rank 1 warm-starts from an estimator it fitted before; rank 0's has nothing to start from
    warm = dict(base, warm_start=True)
    per_rank = [dict(X=SMALL_SHARDS[0], params=warm), dict(X=SMALL_SHARDS[1], params=warm, start=_warm(warm))]
    out.append(("disagree-warm_start", "fit", per_rank))
    shards = [[SMALL[:50]], [SMALL[50:, :1]]]
    out.append(("disagree-n_features-online", "partial_fit", [dict(batches=s, params=base) for s in shards]))
    for name, (change, _) in ONLINE_DISAGREEMENTS.items():
        if change is None:  # rank 1 goes on from an estimator that made one update
            other = dict(params=base, start=GaussianMixture(**base).partial_fit(SMALL))
        else:
            other = dict(params={**base, **change})
        per_rank = [dict(batches=[SMALL_SHARDS[0]], params=base), dict(batches=[SMALL_SHARDS[1]], **other)]
        out.append((f"online-disagree-{name}", "partial_fit", per_rank))

    # An error on one rank only: every rank raises, and the group stays usable for everything after them.
    out.append(("fail-empty-shard", *_fit([SMALL[:50], SMALL[:0]], _both(base))))
    chunks = [SMALL[:25], _with_nan(SMALL[25:50], 3, 1)]  # read by the first pass (scan), not checked whole
    out.append(("fail-nan-chunks", *_fit([chunks, SMALL[50:]], _both(base))))
    batches = [[SMALL[:50]], [_with_nan(SMALL[50:], 0, 0)]]
    out.append(("fail-nan-online", "partial_fit", [dict(batches=b, params=base) for b in batches]))
    refused = folder / "refused.garbage"  # a checkpoint_path rank 1 alone is given, and cannot read
    refused.write_bytes(b"not a checkpoint")
    paths = [str(folder / "absent.ckpt"), str(refused)]
    out.append(("fail-checkpoint", *_fit(SMALL_SHARDS, [dict(base, checkpoint_path=p) for p in paths])))
    out.append(("after-failures", *_fit(SMALL_SHARDS, _both(base))))

    for covariance_type in COVARIANCE_TYPES:
        out.append((f"match-{covariance_type}", *_fit(BLOBS_SHARDS, _both(_match_params(covariance_type)))))
    out.append(("match-auto", *_fit(BLOBS_SHARDS, _both(AUTO_PARAMS))))
    out.append(("match-fixed", *_fit(BLOBS_SHARDS, _both(FIXED_PARAMS))))
    shards = zip(BLOBS_SHARDS, (WEIGHTS[:170], WEIGHTS[170:]), strict=True)
    out.append(("match-weighted", "fit", [dict(X=x, params=MATCH_PARAMS, sample_weight=w) for x, w in shards]))
    pairs = [
        [(x[i : i + 40], w[i : i + 40]) for i in range(0, len(x), 40)]
        for x, w in zip(BLOBS_SHARDS, (WEIGHTS[:170], WEIGHTS[170:]), strict=True)
    ]
    out.append(
        (
            "match-weighted-chunks",
            "fit",
            [dict(X=p, params=WEIGHTED_CHUNK_PARAMS, sample_weight="chunks") for p in pairs],
        )
    )

    for init in SEED_INITS:
        params = [dict(SEED_PARAMS, init_params=init, random_state=seed) for seed in (0, 5)]
        out.append((f"seed-{init}", *_fit(SEEDED_SHARDS, params)))
        out.append((f"unseeded-{init}", *_fit(SEEDED_SHARDS, _both(dict(SEED_PARAMS, init_params=init)))))
    for init in ONLINE_INITS:
        for label, seeds in (("seed", (0, 5)), ("unseeded", (None, None))):
            params = [dict(n_components=3, init_params=init, random_state=seed) for seed in seeds]
            per_rank = [dict(batches=ONLINE_SHARDS[r], params=params[r]) for r in range(2)]
            out.append((f"online-{label}-{init}", "partial_fit", per_rank))

    for name, (shards, size, seed) in SAMPLES.items():
        out.append((f"sample-{name}", "sample", [dict(X=shards[r], size=size, seed=seed) for r in range(2)]))
    for init in BIG_INITS:
        out.append((f"big-{init}", *_fit(BIG_SHARDS, _both(dict(BIG_PARAMS, init_params=init)))))

    # Checkpoints: an uninterrupted fit; the same fit stopped after STOP_AT iterations; ranks that disagree
    # on whether there is a checkpoint (either way round); the fit resumed from the stopped one's checkpoint.
    shared, other = str(folder / "fit.ckpt"), str(folder / "other.ckpt")
    out.append(("checkpoint-whole", *_fit(CHECKPOINTED_SHARDS, _both(CHECKPOINT_PARAMS))))
    stopped = dict(CHECKPOINT_PARAMS, checkpoint_path=shared)
    out.append(("checkpoint-stop", "fit", [dict(X=x, params=stopped, stop_at=STOP_AT) for x in CHECKPOINTED_SHARDS]))
    for name, paths in (("checkpoint-disagree-01", (shared, other)), ("checkpoint-disagree-10", (other, shared))):
        params = [dict(CHECKPOINT_PARAMS, checkpoint_path=p) for p in paths]
        out.append((name, *_fit(CHECKPOINTED_SHARDS, params)))
    out.append(("checkpoint-resume", *_fit(CHECKPOINTED_SHARDS, _both(stopped))))
    # The same stop and resume with rank 1 given another random_state: rank 0's is the fit's (and its checkpoint's).
    seeds = [dict(CHECKPOINT_PARAMS, checkpoint_path=str(folder / "seeds.ckpt"), random_state=s) for s in (1, 5)]
    per_rank = [dict(X=x, params=p, stop_at=STOP_AT) for x, p in zip(CHECKPOINTED_SHARDS, seeds, strict=True)]
    out.append(("checkpoint-seeds-stop", "fit", per_rank))
    out.append(("checkpoint-seeds-resume", *_fit(CHECKPOINTED_SHARDS, seeds)))
    return out


def _match_params(covariance_type: str) -> dict:
    return dict(MATCH_PARAMS, covariance_type=covariance_type)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ranks:
    """What each rank recorded per scenario."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _files(self, name: str, suffix: str) -> list[Path]:
        return [self.folder / f"{name}.rank{r}.{suffix}" for r in range(2)]

    def results(self, name: str) -> list[dict]:
        """Every rank's arrays; fails with the ranks' errors if a rank raised."""
        errors = [e.read_text() for e in self._files(name, "err") if e.exists()]
        assert not errors, f"{name}: " + "\n".join(errors)
        files = self._files(name, "npz")
        assert all(f.exists() for f in files), f"{name}: a rank recorded nothing (an earlier scenario broke it)"
        return [dict(np.load(f)) for f in files]

    def errors(self, name: str) -> list[str]:
        """Every rank's exception text; fails if a rank did not raise."""
        files = self._files(name, "err")
        assert all(f.exists() for f in files), f"{name}: a rank did not raise"
        return [f.read_text() for f in files]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Ranks:
    folder = tmp_path_factory.mktemp("ranks")
    mp.start_processes(
        run_scenarios,
        args=(2, _free_port(), scenarios(folder), str(folder)),
        nprocs=2,
        start_method="spawn",
        join=True,
    )
    return Ranks(folder)


@pytest.fixture(autouse=True)
def _one_thread():
    """The references run on one thread, as the ranks do: several would only compete for the few cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit_one_process(X, **params) -> GaussianMixture:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in the workers
        return GaussianMixture(**params).fit(X)


def assert_same_ranks(results: list[dict]) -> None:
    """Every rank ends with the identical model (bit for bit: the M-steps run on identical sums)."""
    for name in ("weights", "means", "covariances", "lower_bounds", "init_lower_bounds", "n_iter"):
        np.testing.assert_array_equal(results[0][name], results[1][name], err_msg=name)


def assert_matches(result: dict, reference: GaussianMixture, rtol: float = RTOL) -> None:
    assert int(result["n_iter"]) == reference.n_iter_
    np.testing.assert_allclose(result["lower_bounds"], reference.lower_bounds_, rtol=rtol)
    np.testing.assert_allclose(result["init_lower_bounds"], reference.init_lower_bounds_, rtol=rtol)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(result[name], getattr(reference, f"{name}_"), rtol=rtol, atol=rtol, err_msg=name)


# ----------------------------------------------------------------------------- two ranks equal one process


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_two_ranks_match_one_process(ranks, covariance_type):
    results = ranks.results(f"match-{covariance_type}")
    whole = fit_one_process(BLOBS, **_match_params(covariance_type))
    assert_same_ranks(results)
    assert_matches(results[0], whole)
    # every rank labels its own rows
    np.testing.assert_array_equal(np.concatenate([r["labels"] for r in results]), whole.predict(BLOBS))


def test_two_ranks_weigh_rows_as_one_process(ranks):
    results = ranks.results("match-weighted")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = GaussianMixture(**MATCH_PARAMS).fit(BLOBS, sample_weight=WEIGHTS)
    assert_same_ranks(results)
    assert_matches(results[0], whole)


def test_two_ranks_weigh_chunks_as_one_process_on_repeated_rows(ranks):
    results = ranks.results("match-weighted-chunks")
    repeated = fit_one_process(np.repeat(BLOBS, WEIGHTS.astype(int), axis=0), **WEIGHTED_CHUNK_PARAMS)
    assert_same_ranks(results)
    assert_matches(results[0], repeated)
    labels = np.concatenate([r["labels"] for r in results])
    np.testing.assert_array_equal(
        np.repeat(labels, WEIGHTS.astype(int)), repeated.predict(np.repeat(BLOBS, WEIGHTS.astype(int), 0))
    )


def test_two_ranks_hold_parameters_as_one_process(ranks):
    results = ranks.results("match-fixed")
    whole = fit_one_process(BLOBS, **FIXED_PARAMS)
    assert_same_ranks(results)
    assert_matches(results[0], whole)
    np.testing.assert_array_equal(results[0]["means"], FIXED_PARAMS["means_init"])


def test_two_ranks_anneal_and_move_as_one_process(ranks):
    results = ranks.results("match-auto")
    whole = fit_one_process(BLOBS, **AUTO_PARAMS)
    assert_same_ranks(results)
    assert_matches(results[0], whole)
    assert len(whole.split_merge_rounds_) >= 1
    expected = [[*r.merged, r.split, r.lower_bound_after] for r in whole.split_merge_rounds_]
    np.testing.assert_allclose(results[0]["rounds"], expected, rtol=RTOL)


# ----------------------------------------------------------------------------- ranks that disagree


@pytest.mark.parametrize(
    ("scenario", "disagreement"),
    [(f"disagree-{name}", f"{name} {values}") for name, (_, values) in DISAGREEMENTS.items()]
    + [(f"online-disagree-{name}", f"{name} {values}") for name, (_, values) in ONLINE_DISAGREEMENTS.items()]
    + [
        ("disagree-n_features", "n_features (rank 0: 2, rank 1: 1)"),
        ("disagree-warm_start", "warm_start (rank 0: False, rank 1: True)"),
        ("disagree-n_features-online", "n_features (rank 0: 2, rank 1: 1)"),
        ("checkpoint-disagree-01", "resumed_from_checkpoint (rank 0: True, rank 1: False)"),
        ("checkpoint-disagree-10", "resumed_from_checkpoint (rank 0: False, rank 1: True)"),
    ],
)
def test_ranks_that_disagree_fail_with_the_same_message(ranks, scenario, disagreement):
    """Every rank raises the same ValueError naming the parameter and each rank's value (instead of hanging)."""
    first_lines = [e.splitlines()[0] for e in ranks.errors(scenario)]
    expected = f"ValueError: Distributed fit: ranks disagree on {disagreement}; every rank must use the same."
    assert first_lines == [expected, expected]


# ----------------------------------------------------------------------------- an error on one rank


@pytest.mark.parametrize("scenario", FAILURES)
def test_an_error_on_one_rank_is_raised_on_every_rank(ranks, scenario):
    """The rank that failed raises its own error; the other a ValueError naming it (not a gloo error)."""
    failed, start = FAILURES[scenario]
    errors = ranks.errors(scenario)
    own = errors[failed].splitlines()[0]
    assert own.startswith("ValueError: " + start.format(folder=ranks.folder)), own
    message = own.removeprefix("ValueError: ")
    for r, error in enumerate(errors):
        if r != failed:
            assert error.splitlines()[0] == f"ValueError: Distributed fit: rank {failed} failed: {message}"
    if sys.version_info >= (3, 11):  # the failed rank's traceback says what the others raised
        assert f"{distributed.NOTE_PREFIX}raised on every rank" in errors[failed]


def test_the_group_goes_on_after_errors_on_one_rank(ranks):
    """The scenario after the failures runs on both ranks, to the model one process fits."""
    results = ranks.results("after-failures")
    assert_same_ranks(results)
    assert_matches(results[0], fit_one_process(SMALL, n_components=2, random_state=0))


def test_together_without_distribution():
    """One process: the block's error is raised as it is, with no note, and a block without one passes."""
    error = KeyError("x")
    with pytest.raises(KeyError) as raised, distributed.together():
        raise error
    assert raised.value is error and not getattr(error, "__notes__", None)
    with distributed.together():
        pass
    distributed.raise_together(None)


# ----------------------------------------------------------------------------- rank 0's seed


@pytest.mark.parametrize("init_params", SEED_INITS)
def test_every_rank_uses_rank_zero_seed(ranks, init_params):
    """Ranks given random_state 0 and 5 fit what one process fits with 0."""
    results = ranks.results(f"seed-{init_params}")
    assert_same_ranks(results)
    assert_matches(results[0], fit_one_process(SEEDED, **SEED_PARAMS, init_params=init_params, random_state=0))


@pytest.mark.parametrize("init_params", SEED_INITS)
def test_unseeded_ranks_agree(ranks, init_params):
    assert_same_ranks(ranks.results(f"unseeded-{init_params}"))


@pytest.mark.parametrize("init_params", ONLINE_INITS)
def test_first_partial_fit_uses_rank_zero_seed(ranks, init_params):
    """The first partial_fit initialises from its batch with rank 0's seed; later calls blend in the next batch."""
    reference = GaussianMixture(n_components=3, init_params=init_params, random_state=0)
    first_means = reference.partial_fit(ONLINE_BATCHES[0]).means_.copy()
    reference.partial_fit(ONLINE_BATCHES[1])
    seeded = ranks.results(f"online-seed-{init_params}")
    for r in seeded:
        np.testing.assert_allclose(r["first_means"], first_means, rtol=RTOL, atol=RTOL)
        assert_matches(r, reference)
    assert_same_ranks(seeded)
    unseeded = ranks.results(f"online-unseeded-{init_params}")
    assert_same_ranks(unseeded)
    np.testing.assert_array_equal(unseeded[0]["first_means"], unseeded[1]["first_means"])


# ----------------------------------------------------------------------------- the seeding sample


@pytest.mark.parametrize("case", SAMPLES)
def test_sample_equals_one_process(ranks, case):
    """Each rank keeps its smallest keys; the merge keeps the global smallest: one process's rows, in its order."""
    shards, size, seed = SAMPLES[case]
    data = scan(TensorSource(torch.from_numpy(np.concatenate(shards))), dtype=torch.float64)
    expected = data.sample(size, seed).numpy()
    assert expected.shape == (min(size, data.n_samples), data.n_features)
    scale = np.abs(expected).max()
    for r in ranks.results(f"sample-{case}"):
        assert r["rows"].shape == expected.shape
        # the rows are centred on means summed in another grouping: equal to rounding
        np.testing.assert_allclose(r["rows"], expected, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("init_params", BIG_INITS)
def test_initialisation_beyond_the_seeding_sample(ranks, init_params):
    """300k rows on two ranks seed from the sample one process draws; iteration 1's bounds are the initial models'."""
    results = ranks.results(f"big-{init_params}")
    assert_same_ranks(results)
    assert_matches(results[0], fit_one_process(BIG, **BIG_PARAMS, init_params=init_params))


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_resumes_to_the_uninterrupted_fit(ranks):
    """Rank 0 writes the checkpoint of a stopped fit; both ranks resume from it to exactly the uninterrupted fit."""
    whole = ranks.results("checkpoint-whole")
    assert_same_ranks(whole)
    assert_matches(whole[0], fit_one_process(CHECKPOINTED, **CHECKPOINT_PARAMS))
    assert int(whole[0]["n_iter"]) > STOP_AT + 2  # the fit goes on well after the stop

    stopped = ranks.results("checkpoint-stop")
    for r in stopped:
        assert r["stopped"] and list(r["iterations"]) == list(range(1, STOP_AT + 1))
        # every rank sees the file rank 0 wrote, holding the last completed iteration
        assert r["checkpoint_exists"] and int(r["checkpoint_iteration"]) == STOP_AT

    resumed = ranks.results("checkpoint-resume")
    for r, w in zip(resumed, whole, strict=True):
        # resumed after the stop (not started over), to the same arithmetic as the uninterrupted fit
        np.testing.assert_array_equal(r["iterations"], w["iterations"][STOP_AT:])
        for name in ("weights", "means", "covariances", "lower_bounds", "init_lower_bounds", "n_iter", "labels"):
            np.testing.assert_array_equal(r[name], w[name], err_msg=name)
        assert not r["checkpoint_exists"]  # the finished fit removed it
    assert not any(ranks.folder.glob("*.ckpt"))  # nor did the failed ones write any


def test_resume_with_ranks_given_other_seeds(ranks):
    """Ranks given random_state 1 and 5 share a checkpoint described by rank 0's seed, and resume from it."""
    whole = ranks.results("checkpoint-whole")  # random_state=1 on both ranks
    stopped = ranks.results("checkpoint-seeds-stop")
    for r in stopped:
        assert r["stopped"] and r["checkpoint_exists"] and int(r["checkpoint_iteration"]) == STOP_AT
    for r, w in zip(ranks.results("checkpoint-seeds-resume"), whole, strict=True):
        np.testing.assert_array_equal(r["iterations"], w["iterations"][STOP_AT:])
        for name in ("weights", "means", "covariances", "lower_bounds", "init_lower_bounds", "n_iter", "labels"):
            np.testing.assert_array_equal(r[name], w[name], err_msg=name)
        assert not r["checkpoint_exists"]


def test_only_rank_zero_writes_the_checkpoint(ranks):
    """Every rank reads the checkpoint, rank 0 alone writes it (the others would race it on a shared file system)."""
    stopped = ranks.results("checkpoint-stop")
    # the initialisation, iterations 2 and 4 (checkpoint_interval=2) and the state at the stop
    assert [int(r["saves"]) for r in stopped] == [4, 0]
    resumed = ranks.results("checkpoint-resume")
    assert int(resumed[0]["saves"]) >= 1 and int(resumed[1]["saves"]) == 0
