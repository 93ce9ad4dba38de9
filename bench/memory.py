"""Peak memory of a fit on a NumPy memmap larger than the memory it is allowed to use.

Usage::

    python -m bench.memory [--gib 2.0] [--features 32] [--components 8] [--iterations 5] [--dir /tmp]
                           [--batch-size none,262144] [--config configs/large.yaml] [--out memory.json]

Writes a ``.npy`` file of ``--gib`` GiB (float32 rows drawn from a mixture),
then, in a fresh process per setting, fits it through ``np.load(..., mmap_mode='r')``
on CPU and reports the process's peak resident memory above its level before
the fit (``VmHWM``), next to the size of the data. ``--batch-size`` lists the
settings to compare side by side (``none``: torchgmm's default); ``--config``
takes the estimator's parameters from a YAML config of the command line instead
(its ``batch_size`` included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_data(path: Path, gib: float, n_features: int, n_components: int, seed: int = 0) -> tuple[int, int]:
    """Write ``gib`` GiB of float32 mixture rows to ``path`` as .npy, a block at a time."""
    n_rows = int(gib * 2**30) // (4 * n_features)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (n_components, n_features)).astype(np.float32)
    header = {"descr": "<f4", "fortran_order": False, "shape": (n_rows, n_features)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, n_rows, 1 << 20):
            count = min(1 << 20, n_rows - start)
            block = centres[rng.integers(0, n_components, count)] + rng.standard_normal((count, n_features), np.float32)
            f.write(block.astype("<f4").tobytes())
    return n_rows, n_features


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def fit_and_measure(path: str, iterations: int, params: dict) -> dict:
    """Fit the memmap in this process and report its peak resident memory (runs in a fresh process)."""
    import torch

    from torchgmm import GaussianMixture

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    X = np.load(path, mmap_mode="r")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    gm = GaussianMixture(
        **{"init_params": "k-means++", **params, "max_iter": iterations, "tol": 0.0, "random_state": 0}
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    seconds = time.perf_counter() - start
    return {
        "params": params,
        "rows": X.shape[0],
        "features": X.shape[1],
        "data_mib": X.nbytes / 2**20,
        "peak_above_start_mib": (_status_kib("VmHWM") - base) / 1024,
        "rss_before_fit_mib": base / 1024,
        "seconds": seconds,
        "iterations": gm.n_iter_,
        "lower_bound": gm.lower_bound_,
    }


def _settings(args: argparse.Namespace) -> list[dict]:
    """The estimator parameters of each fit to measure."""
    if args.config:
        import yaml

        config = yaml.safe_load(Path(args.config).read_text())
        keep = ("n_components", "covariance_type", "n_init", "init_params", "batch_size", "dtype")
        return [{k: config[k] for k in keep if config.get(k) is not None}]
    sizes = [None if b.lower() == "none" else int(b) for b in args.batch_size.split(",")]
    return [{"n_components": args.components, "batch_size": b} for b in sizes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.0, help="size of the data file (default 2 GiB)")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batch-size", default="none,262144", help="settings to compare, e.g. none,65536,262144")
    parser.add_argument("--config", help="a YAML config of the command line (configs/large.yaml) to measure instead")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write the data file")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(fit_and_measure(args.measure, args.iterations, json.loads(args.params))))
        return 0
    path = Path(args.dir) / f"torchgmm-memory-bench-{os.getpid()}.npy"
    results = []
    try:
        t = time.perf_counter()
        rows, cols = write_data(path, args.gib, args.features, args.components)
        size = path.stat().st_size / 2**30
        print(f"wrote {path} ({rows} x {cols} float32, {size:.2f} GiB) in {time.perf_counter() - t:.1f} s")
        for params in _settings(args):
            command = [sys.executable, "-m", "bench.memory", "--measure", str(path)]
            command += ["--iterations", str(args.iterations), "--params", json.dumps(params)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            peak, data = result["peak_above_start_mib"], result["data_mib"]
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            print(
                f"fit of a {data:.0f} MiB memmap ({result['rows']} x {result['features']}; {shown}; "
                f"{result['iterations']} EM iterations) on CPU: peak resident memory {peak:.0f} MiB above the "
                f"{result['rss_before_fit_mib']:.0f} MiB before the fit ({100 * peak / data:.1f} % of the data), "
                f"{result['seconds']:.1f} s"
            )
    finally:
        path.unlink(missing_ok=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"gib": args.gib, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
