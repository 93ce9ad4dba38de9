"""Body of one rank in tests/test_distributed.py (a module, so spawned processes can import it).

Every rank runs the same list of named scenarios in order, in one process group, and records for each
either its arrays (``NAME.rankR.npz``) or the exception it raised (``NAME.rankR.err``: ``Type: message`` and
the traceback). A ``check_same`` failure, and an error that ``torchgmm.distributed.raise_together`` raised on
every rank, raise at the same collective on every rank, so the group stays in step for the next scenario.
Any other error stops this rank's list (the ranks may no longer be in step); the group's timeout bounds how
long the other rank then waits in a collective.
"""

from __future__ import annotations

import datetime
import os
import traceback
import warnings

import numpy as np
import torch
import torch.distributed as dist

# Checkpoint writes by this rank (rank 0 alone must write); see _count_checkpoint_saves.
_SAVES = [0]


class Stop(Exception):
    """Raised by a fit's callback to stop it mid-fit, as an interrupt would."""


def run_scenarios(rank: int, world_size: int, port: int, scenarios: list, out_dir: str) -> None:
    """Run ``scenarios``, a list of ``(name, kind, arguments per rank)``, with ``KINDS[kind](**arguments)``."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # convergence warnings of max_iter=1 fits, say; results are what is compared
    _count_checkpoint_saves()
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),  # bounds a wait in a collective the other rank left
    )
    try:
        for name, kind, per_rank in scenarios:
            try:
                arrays = KINDS[kind](**per_rank[rank])
                np.savez(os.path.join(out_dir, f"{name}.rank{rank}.npz"), **arrays)
            except Exception as exc:  # the test reads the message each rank raised
                with open(os.path.join(out_dir, f"{name}.rank{rank}.err"), "w") as f:
                    f.write(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                if not _raised_on_every_rank(exc):
                    break
    finally:
        dist.destroy_process_group()


def _raised_on_every_rank(exc: Exception) -> bool:
    """Whether every rank raised at the same point: a ``check_same`` or ``raise_together`` error."""
    from torchgmm.distributed import NOTE_PREFIX

    if isinstance(exc, ValueError) and str(exc).startswith("Distributed fit: rank"):
        return True  # check_same's "ranks disagree", or raise_together's "rank R failed" on a rank that did not fail
    return any(note.startswith(NOTE_PREFIX) for note in getattr(exc, "__notes__", ()))  # the rank that failed


def _count_checkpoint_saves() -> None:
    from torchgmm.checkpoint import Checkpoint

    original = Checkpoint.save

    def save(self, state):
        _SAVES[0] += 1
        return original(self, state)

    Checkpoint.save = save


def _fitted(gm) -> dict:
    return dict(
        weights=gm.weights_,
        means=gm.means_,
        covariances=gm.covariances_,
        lower_bounds=np.asarray(gm.lower_bounds_),
        init_lower_bounds=gm.init_lower_bounds_,
        n_iter=gm.n_iter_,
        rounds=np.asarray([[*r.merged, r.split, r.lower_bound_after] for r in gm.split_merge_rounds_]),
    )


def fit(X, params: dict, stop_at: int | None = None, start=None, sample_weight=None) -> dict:
    """``fit_predict`` on this rank's shard; with ``stop_at``, a callback stops it after that iteration.

    Also records the iterations the callback saw (a resumed fit starts after the checkpoint's), this rank's
    checkpoint writes, and, once every rank is done, whether the checkpoint file exists and its iteration.
    ``start``, a fitted ``GaussianMixture``, is fitted again instead of a new one with ``params``.
    """
    from torchgmm import GaussianMixture

    seen = []

    def callback(iteration, running, best):
        seen.append(iteration)
        if iteration == stop_at:
            raise Stop

    saves_before = _SAVES[0]
    gm = GaussianMixture(**params) if start is None else start
    try:
        labels = gm.fit_predict(X, sample_weight=sample_weight, callback=callback)
        out = dict(_fitted(gm), labels=labels, stopped=False)
    except Stop:
        out = dict(stopped=True)
    out.update(iterations=np.asarray(seen, dtype=np.int64), saves=_SAVES[0] - saves_before)
    path = params.get("checkpoint_path")
    if path is not None:
        dist.barrier()  # rank 0 has finished writing (or removing) the file
        out["checkpoint_exists"] = os.path.exists(path)
        if out["checkpoint_exists"]:
            out["checkpoint_iteration"] = torch.load(path, weights_only=True)["state"]["iteration"]
    return out


def partial_fit(batches: list, params: dict, start=None) -> dict:
    """``partial_fit`` on this rank's share of each batch; the means after the first call too.

    ``start``, a fitted ``GaussianMixture``, is updated instead of a new one with ``params``.
    """
    from torchgmm import GaussianMixture

    gm = GaussianMixture(**params) if start is None else start
    first_means = None
    for batch in batches:
        gm.partial_fit(batch)
        first_means = gm.means_.copy() if first_means is None else first_means
    return dict(_fitted(gm), first_means=first_means)


def sample(X, size: int, seed: int) -> dict:
    """``DataSource.sample`` over this rank's shard (with the shift its rows are centred on)."""
    from torchgmm.data import TensorSource, scan

    data = scan(TensorSource(torch.from_numpy(X)), dtype=torch.float64)
    return dict(rows=data.sample(size, seed).numpy(), shift=data.shift.numpy())


KINDS = {"fit": fit, "partial_fit": partial_fit, "sample": sample}
