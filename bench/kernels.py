"""Micro-benchmarks of the E-step's memory-bound steps, to choose between equivalent torch forms.

Usage::

    python -m bench.kernels [--device cuda]

Times, with device events (median of 20 after warm-up), each candidate form of
(1) the squared norms of the whitened residuals ``Y [R, K, n, D]`` (full
covariance: one read of ``Y``), and (2) the responsibilities and normaliser of
``[n, K]`` log-densities. Prints achieved GB/s against the minimum bytes
(each input read once, each output written once).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from torchgmm._math import normalise_


def _time(fn, device: str, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def _softmax_lse(log_prob):
    return torch.logsumexp(log_prob, -1), torch.softmax(log_prob, -1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    small = device == "cpu"
    R, K, n, D = (1, 16, 4096, 16) if small else (8, 64, 8192, 64)
    Y = torch.randn(R, K, n, D, device=device)
    norms = {
        "vector_norm(Y).square_()": lambda: torch.linalg.vector_norm(Y, dim=-1).square_(),
        "Y.square().sum(-1)": lambda: Y.square().sum(-1),
        "linalg.vecdot(Y, Y)": lambda: torch.linalg.vecdot(Y, Y),
        "(Y * Y) @ ones": lambda: (Y * Y) @ torch.ones(D, device=device),
    }
    print(f"squared norms of Y [{R}, {K}, {n}, {D}] float32 on {device}")
    print(f"{'form':<30}{'ms':>9}{'GB/s':>9}")
    minimum = Y.numel() * 4 + R * K * n * 4
    for name, fn in norms.items():
        seconds = _time(fn, device)
        print(f"{name:<30}{seconds * 1e3:>9.3f}{minimum / seconds / 1e9:>9.0f}")
    N, K = (4096, 64) if small else (65536, 1024)
    log_prob = -50 * torch.rand(N, K, device=device)
    forms = {
        "normalise_ (library)": lambda: normalise_(log_prob.clone()),
        "logsumexp + softmax": lambda: _softmax_lse(log_prob),
        "clone (a copy, for scale)": lambda: log_prob.clone(),
    }
    print(f"responsibilities of [{N}, {K}] log-densities on {device}")
    print(f"{'form':<30}{'ms':>9}{'GB/s':>9}")
    minimum = 2 * log_prob.numel() * 4
    for name, fn in forms.items():
        seconds = _time(fn, device)
        print(f"{name:<30}{seconds * 1e3:>9.3f}{minimum / seconds / 1e9:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
