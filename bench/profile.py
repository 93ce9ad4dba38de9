"""Where the time of EM iterations goes: a torch.profiler table for one bench case.

Usage::

    python -m bench.profile --config configs/bench-gpu.yaml --case G-diag [--iterations 3] [--rows 25]

A case name with ``-aniso`` appended runs the case on anisotropic, overlapping clusters, as the bench does.

Fits the case (data and start as in the bench) once to warm up, then profiles a
fit of ``--iterations`` iterations and prints the operators sorted by their
own device time (CPU time on CPU).
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

from bench.run import load_config, make_data
from torchgmm import GaussianMixture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="bench YAML (default configs/bench-cpu.yaml)")
    parser.add_argument("--case", required=True, help="case name in the config")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--rows", type=int, default=25, help="table rows")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    cases = {c["name"]: {**config.get("defaults", {}), **c} for c in config["cases"]}
    cases.update({f"{name}-aniso": {**case, "data": "anisotropic"} for name, case in list(cases.items())})
    if args.case not in cases:
        raise SystemExit(f"no case {args.case!r}; the config has {', '.join(cases)}")
    case = cases[args.case]
    cuda = case["device"].startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return 0
    X, start = make_data(case)
    data = torch.as_tensor(X, device=case["device"])
    gm = GaussianMixture(
        case["n_components"],
        covariance_type=case["covariance_type"],
        n_init=case["n_init"],
        tol=0.0,
        max_iter=args.iterations,
        matmul_precision=case.get("matmul_precision"),
        **start,
    )
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(data)
        with profile(activities=activities) as prof:
            gm.fit(data)
            if cuda:
                torch.cuda.synchronize()
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"{args.case}: {args.iterations} iterations (plus the final labelling pass), sorted by {key}")
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
