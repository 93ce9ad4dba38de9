"""Body of one rank in tests/test_distributed.py (a module, so spawned processes can import it)."""

from __future__ import annotations

import traceback

import numpy as np
import torch
import torch.distributed as dist


def fit_shard(rank: int, world_size: int, port: int, shards: list, kwargs_per_rank: list, out_dir: str) -> None:
    from torchgmm import GaussianMixture

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        X = shards[rank]
        gm = GaussianMixture(**kwargs_per_rank[rank])
        labels = gm.fit_predict(X)
        np.savez(
            f"{out_dir}/rank{rank}.npz",
            weights=gm.weights_,
            means=gm.means_,
            covariances=gm.covariances_,
            lower_bounds=np.asarray(gm.lower_bounds_),
            n_iter=gm.n_iter_,
            labels=labels,
        )
    except Exception as exc:  # the test reads the message each rank raised
        with open(f"{out_dir}/rank{rank}.err", "w") as f:
            f.write(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    finally:
        dist.destroy_process_group()
