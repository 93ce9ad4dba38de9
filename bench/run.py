"""Benchmark torchgmm against its peers, side by side in one run.

Usage::

    python -m bench --config configs/bench-cpu.yaml [--cases A,B] [--repeats 5] [--out results.json]

Every library fits the same data from the same start parameters for the same
number of EM iterations (``tol=0``). A case's time per iteration is
``(median fit time with I iterations - median fit time with 1) / (I - 1)``, so
set-up, initialisation and the final labelling pass every library makes drop
out. GFLOP/s is the nominal work (bench/README.md) over that time; the
ceiling is a float32 matrix product measured in the same run. Each library
runs each case in a fresh worker process (with a time limit, ``timeout_s``),
so peak memory is the worker's growth during its first fit and one library's
failure or hang is reported in the table instead of stopping the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.peers import LIBRARIES, Skip

try:
    import yaml
except ImportError:  # pragma: no cover - bench requirement
    yaml = None


def nominal_flops(case: dict) -> float:
    """Floating-point operations of one EM iteration (see bench/README.md)."""
    R, N, K, D = case["n_init"], case["n_samples"], case["n_components"], case["n_features"]
    return {
        "full": 4 * R * N * K * D * D,
        "tied": 2 * R * N * K * D * D + 2 * R * N * D * D,
        "diag": 8 * R * N * K * D,
        "spherical": 6 * R * N * K * D,
    }[case["covariance_type"]]


def matmul_ceiling(device: str, size: int, precision: str = "highest") -> float:
    """Median float32 GFLOP/s of a ``size``-cubed matrix product (``precision='high'``: TF32 allowed)."""
    torch.set_float32_matmul_precision(precision)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    times = []
    for _ in range(5):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    torch.set_float32_matmul_precision("highest")
    return 2 * size**3 / statistics.median(times[1:]) / 1e9


def copy_bandwidth(device: str, gib: float = 1.0) -> float:
    """Median GB/s of a device-to-device copy, counting bytes read plus bytes written."""
    a = torch.empty(int(gib * 2**30) // 4, device=device).uniform_()
    b = torch.empty_like(a)
    times = []
    for _ in range(6):
        torch.cuda.synchronize()
        start = time.perf_counter()
        b.copy_(a)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * a.numel() * 4 / statistics.median(times[1:]) / 1e9


DATA_KINDS = ("isotropic", "anisotropic")


def make_data(case: dict, seed: int = 0):
    """A mixture of ``K`` Gaussian clusters and fixed start parameters for it.

    ``case["data"]``: ``'isotropic'`` (equal, well-separated unit-variance clusters) or ``'anisotropic'``
    (unequal weights, overlapping clusters of random shapes, some of them thin: the data that does not
    flatter a library, and on which no ``exp`` falls into its slow underflow range for long).
    """
    N, D, K = case["n_samples"], case["n_features"], case["n_components"]
    dtype = getattr(torch, case["dtype"])
    g = torch.Generator(device=case["device"]).manual_seed(seed)
    if case.get("data", "isotropic") == "anisotropic":
        centres = 2.0 * torch.randn(K, D, generator=g, device=case["device"], dtype=torch.float64)
        eye = torch.eye(D, device=case["device"], dtype=torch.float64)
        shapes = torch.randn(K, D, D, generator=g, device=case["device"], dtype=torch.float64) / D**0.5 + 0.3 * eye
        draws = -torch.log(torch.rand(K, generator=g, device=case["device"], dtype=torch.float64))
        weights = draws / draws.sum()  # Dirichlet(1, ..., 1): unequal clusters
        labels = torch.multinomial(weights, N, replacement=True, generator=g)
        noise = torch.randn(N, D, generator=g, device=case["device"], dtype=torch.float64)
        X = centres[labels]
        for k in range(K):  # per cluster: shapes[labels] would be N x D x D (131 GB at N=1M, D=128)
            rows = (labels == k).nonzero().squeeze(1)
            X.index_add_(0, rows, noise.index_select(0, rows) @ shapes[k])
        X = X.to(dtype)
    else:
        centres = 4.0 * torch.randn(K, D, generator=g, device=case["device"], dtype=dtype)
        labels = torch.randint(K, (N,), generator=g, device=case["device"])
        X = centres[labels] + torch.randn(N, D, generator=g, device=case["device"], dtype=dtype)
    rows = torch.randperm(N, generator=g, device=case["device"])[:K]
    Xd = X.to(torch.float64)
    variance = Xd.var(0)
    cov_type = case["covariance_type"]
    if cov_type in ("full", "tied"):
        precision = torch.linalg.inv(torch.cov(Xd.T))
        precisions = precision if cov_type == "tied" else precision.expand(K, D, D)
    elif cov_type == "diag":
        precisions = (1.0 / variance).expand(K, D)
    else:
        precisions = (1.0 / variance.mean()).expand(K)
    start = {
        "weights_init": np.full(K, 1.0 / K),
        "means_init": X[rows].to(torch.float64).cpu().numpy(),
        "precisions_init": precisions.contiguous().cpu().numpy(),
    }
    X_host = X.cpu().numpy() if case["device"] == "cpu" else X
    return X_host, start


class PeakMemory:
    """Peak memory above the starting point while the block runs, in MiB."""

    def __init__(self, device: str):
        self.device = device
        self.peak_mib = math.nan

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:  # resets VmHWM to the current RSS (Linux)
                Path("/proc/self/clear_refs").write_text("5")
                self.base = _status_kib("VmRSS")
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            self.peak_mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        elif self.base is not None:
            self.peak_mib = (_status_kib("VmHWM") - self.base) / 1024
        return False


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def time_library(make, iterations: int, repeats: int, device: str) -> tuple[float, float, float]:
    """Seconds per EM iteration, seconds of the whole fit and peak memory (MiB) of one library on one case.

    Runs in a fresh worker process, so the first fit's growth of resident
    memory (or of CUDA allocations) is the fit's peak memory.
    """
    # scikit-learn cannot fit max_iter=0 from a given precisions_init, so the base is one iteration
    full, base = make(iterations), make(1)
    with PeakMemory(device) as memory:
        full()  # also the warm-up: first-call costs (allocations, kernels, JIT) stay out of the timing
    base()
    with_iters, without = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        full()
        with_iters.append(time.perf_counter() - start)
        start = time.perf_counter()
        base()
        without.append(time.perf_counter() - start)
    per_iteration = (statistics.median(with_iters) - statistics.median(without)) / (iterations - 1)
    return max(per_iteration, 1e-9), statistics.median(with_iters), memory.peak_mib


def worker(spec: dict) -> dict:
    """Time one library on one case (the body of a worker process)."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    case = spec["case"]
    X, start = make_data(case)
    try:
        if spec["library"] not in LIBRARIES:
            raise Skip(f"unknown library (known: {', '.join(LIBRARIES)})")
        make = LIBRARIES[spec["library"]](X, start, case)
        seconds, fit_seconds, peak = time_library(make, case["iterations"], spec["repeats"], case["device"])
    except Skip as reason:
        return {"skipped": str(reason)}
    pinned = sorted(k for k in PINNING if k in os.environ)
    return {"seconds": seconds, "fit_seconds": fit_seconds, "peak_mib": peak, "blas": _blas(), "pinned": pinned}


def _blas() -> str:
    """NumPy's BLAS and the kernel it runs (OpenBLAS's core type), as threadpoolctl sees it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (no threadpoolctl)"
    found = [f"{i.get('internal_api')} {i.get('architecture') or ''}".strip() for i in threadpool_info()]
    return ", ".join(sorted(set(found))) or "none loaded"


# Set on some machines to pin NumPy's OpenBLAS to older kernels: unset for every worker, so that NumPy-based
# peers run the kernels a user's machine would (torch's own BLAS ignores them).
PINNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def worker_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PINNING}
    env["SCIPY_ARRAY_API"] = "1"  # scikit-learn's array API path (sklearn-torch) needs it before SciPy loads
    return env


def run_case(case: dict, libraries: list[str], config: dict, repeats: int, ceilings: dict) -> list[dict]:
    rows = []
    timeout = config.get("timeout_s", 900)
    for name in libraries:
        row = {k: case[k] for k in ("name", "n_samples", "n_features", "n_components", "n_init")}
        row["data"] = case.get("data", "isotropic")
        dtype = "tf32" if case.get("matmul_precision") == "high" else case["dtype"]
        row.update(covariance_type=case["covariance_type"], device=case["device"], dtype=dtype, library=name)
        spec = {"case": case, "library": name, "repeats": repeats, "threads": config.get("threads")}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "bench.run", "--worker", json.dumps(spec)],
                env=worker_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            lines = done.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if done.returncode == 0 and lines else None
            if result is None:
                error = (done.stderr.strip().splitlines() or ["no output"])[-1]
                result = {"skipped": f"failed: {error[:120]}"}
        except subprocess.TimeoutExpired:
            result = {"skipped": f"timed out after {timeout} s"}
        row.update(result)
        if "seconds" in row:
            row["gflops"] = nominal_flops(case) / row["seconds"] / 1e9
            row["ceiling_fraction"] = row["gflops"] / ceilings[dtype if dtype == "tf32" else "float32"]
        rows.append(row)
        print(_line(row, rows[0]), flush=True)
    return rows


HEADER = (
    f"{'case':<13}{'N':>9}{'D':>5}{'K':>6}{'R':>4} {'cov':<10}{'device':<7}{'dtype':<8}{'library':<14}"
    f"{'s/iter':>10}{'fit s':>9}{'GFLOP/s':>9}{'%ceil':>7}{'peak MiB':>10}{'torchgmm x':>12}{'fit x':>8}"
)


def _line(row: dict, reference: dict) -> str:
    head = (
        f"{row['name']:<13}{row['n_samples']:>9}{row['n_features']:>5}{row['n_components']:>6}{row['n_init']:>4} "
        f"{row['covariance_type']:<10}{row['device']:<7}{row['dtype']:<8}{row['library']:<14}"
    )
    if "skipped" in row:
        return head + f"  skipped: {row['skipped']}"
    speedup = row["seconds"] / reference["seconds"] if "seconds" in reference else math.nan
    fit_speedup = row["fit_seconds"] / reference["fit_seconds"] if "fit_seconds" in reference else math.nan
    return head + (
        f"{row['seconds']:>10.4f}{row['fit_seconds']:>9.3f}{row['gflops']:>9.1f}{100 * row['ceiling_fraction']:>6.0f}%"
        f"{row['peak_mib']:>10.1f}{speedup:>12.2f}{fit_speedup:>8.2f}"
    )


def load_config(path: str | None) -> dict:
    if path is None:
        path = str(Path(__file__).resolve().parent.parent / "configs" / "bench-cpu.yaml")
    if yaml is None:
        raise SystemExit("bench needs PyYAML: pip install pyyaml")
    with open(path) as f:
        return yaml.safe_load(f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help="YAML file of cases (default configs/bench-cpu.yaml)")
    parser.add_argument("--cases", help="comma-separated case names to run (default: all)")
    parser.add_argument("--repeats", type=int, help="timed repeats per library (median)")
    parser.add_argument("--libraries", help="comma-separated subset of " + ",".join(LIBRARIES))
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    config = load_config(args.config)
    defaults = config.get("defaults", {})
    cases = []
    for case in config["cases"]:  # every case on each kind of data (config or case: data: [isotropic, ...])
        for kind in case.get("data", config.get("data", list(DATA_KINDS))):
            suffix = "" if kind == "isotropic" else "-aniso"
            cases.append({**defaults, **case, "data": kind, "name": case["name"] + suffix, "base": case["name"]})
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c["name"] in wanted or c["base"] in wanted]  # "A": both kinds of data
    device = defaults.get("device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    repeats = args.repeats or config.get("repeats", 5)
    libraries = args.libraries.split(",") if args.libraries else config.get("libraries", list(LIBRARIES))
    size = config.get("ceiling_size", 4096)
    ceilings = {"float32": matmul_ceiling(device, size)}
    tf32 = ""
    if device.startswith("cuda"):
        ceilings["tf32"] = matmul_ceiling(device, size, "high")
        ceilings["copy_gbs"] = copy_bandwidth(device)
        tf32 = f", TF32 {ceilings['tf32']:.1f} (the ceiling of tf32 rows); copy {ceilings['copy_gbs']:.0f} GB/s"
    machine = torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine()
    print(
        f"machine: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"float32 matmul ceiling {ceilings['float32']:.1f} GFLOP/s{tf32}; {repeats} repeats, median"
    )
    print(HEADER)
    rows = []
    for case in cases:
        rows.extend(run_case(case, case.get("libraries", libraries), config, repeats, ceilings))
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"ceiling_gflops": ceilings["float32"], "ceilings": ceilings, "machine": machine, "rows": rows},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
