"""Speed and accuracy of float64, float32 and TF32 fits from the same start.

Usage::

    python -m bench.precision --device cuda --n-samples 1000000 --n-features 64 --n-components 64

Every fit runs the same number of EM iterations (``tol=0``) from the same
start on the same data (drawn in float32, so all three see identical values).
Accuracy is measured against the float64 fit: the relative difference of the
final lower bound, the largest mean difference over the data's standard
deviation, and the share of samples given the same label. Time per iteration
is the median difference of fits with ``I`` and 1 iterations over ``I - 1``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from bench.run import make_data
from torchgmm import GaussianMixture

PRECISIONS = (("float64", torch.float64, None), ("float32", torch.float32, "highest"), ("tf32", torch.float32, "high"))


def _fit(X, start, args, iterations: int, dtype: torch.dtype, precision: str | None) -> tuple[GaussianMixture, float]:
    gm = GaussianMixture(
        args.n_components,
        covariance_type=args.covariance_type,
        tol=0.0,
        max_iter=iterations,
        matmul_precision=precision,
        **start,
    )
    data = X.to(dtype)
    if data.is_cuda:
        torch.cuda.synchronize()
    begin = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(data)
    if data.is_cuda:
        torch.cuda.synchronize()
    return gm, time.perf_counter() - begin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.precision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--n-features", type=int, default=64)
    parser.add_argument("--n-components", type=int, default=64)
    parser.add_argument("--covariance-type", default="full")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    case = {
        "n_samples": args.n_samples,
        "n_features": args.n_features,
        "n_components": args.n_components,
        "covariance_type": args.covariance_type,
        "device": args.device,
        "dtype": "float32",
    }
    X, start = make_data(case)
    X = torch.as_tensor(X, device=args.device)
    scale = float(X.to(torch.float64).std(0).mean())
    print(
        f"N={args.n_samples} D={args.n_features} K={args.n_components} {args.covariance_type} on {args.device} "
        f"({torch.cuda.get_device_name() if X.is_cuda else 'CPU'}), {args.iterations} iterations, tol=0"
    )
    print(f"{'precision':<10}{'s/iter':>10}{'lower bound':>16}{'rel. diff':>11}{'mean diff/sd':>14}{'same label':>12}")
    reference = None
    for name, dtype, precision in PRECISIONS:
        _fit(X, start, args, 1, dtype, precision)  # warm-up
        full, base = [], []
        for _ in range(args.repeats):
            gm, seconds = _fit(X, start, args, args.iterations, dtype, precision)
            full.append(seconds)
            base.append(_fit(X, start, args, 1, dtype, precision)[1])
        per_iteration = (statistics.median(full) - statistics.median(base)) / max(args.iterations - 1, 1)
        means = torch.as_tensor(gm.means_).to("cpu", torch.float64)
        labels = torch.as_tensor(gm.predict(X.to(dtype))).cpu()
        if reference is None:
            reference = (gm.lower_bound_, means, labels)
        lower_bound, ref_means, ref_labels = reference
        rel = abs(gm.lower_bound_ - lower_bound) / abs(lower_bound)
        mean_diff = float((means - ref_means).abs().max()) / scale
        same = float((labels == ref_labels).double().mean())
        print(f"{name:<10}{per_iteration:>10.4f}{gm.lower_bound_:>16.8f}{rel:>11.1e}{mean_diff:>14.1e}{same:>12.6f}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
