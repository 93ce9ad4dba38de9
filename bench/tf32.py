"""Accuracy of TF32 densities for full covariances, emulated on CPU: the fused kernel's form against the torch one.

Usage::

    python -m bench.tf32 [--out bench/results/tf32-emulated.json]

TF32 products round both inputs to 10 mantissa bits and accumulate in float32. This script rounds the inputs
the same way and accumulates in float64 (at least as accurate as the tensor cores), so it measures the rounding
of each formulation, not of a card. At the parameters of a float64 fit it compares, per data set, the mean
log-likelihood (the lower bound) and the labels of:

- ``float32``: the whitened residuals in full float32;
- ``tf32-centred``: ``(x - mu) P`` with ``x - mu`` formed in float32 and then rounded (the fused Triton kernel);
- ``tf32-folded``: ``[x, 1] @ [[P], [-mu P]]`` with every entry rounded (the torch kernels' product);
- ``bf16-centred``: the centred form with bf16 inputs (7 mantissa bits), for a bf16 mode not offered.

Data: the bench's isotropic and anisotropic mixtures (64 features, 64 components) and scikit-learn's bundled
digits, breast cancer and wine measurements, each centred on its mean as torchgmm centres its data.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings

import numpy as np
import torch
from torch import Tensor

from bench.run import make_data
from torchgmm import GaussianMixture


def tf32(t: Tensor, mantissa_bits: int = 10) -> Tensor:
    """Round float32 values to ``mantissa_bits`` bits after the point (TF32: 10, bf16: 7), nearest, as float64."""
    drop = 23 - mantissa_bits
    bits = t.to(torch.float32).contiguous().view(torch.int32)
    rounded = ((bits + (1 << (drop - 1))) & ~((1 << drop) - 1)).view(torch.float32)
    return rounded.to(torch.float64)


def log_likelihoods(X: torch.Tensor, gm: GaussianMixture, form: str) -> torch.Tensor:
    """``log p(x)`` per row and ``log w_k p(x | k)`` per component, in the given form of the residuals."""
    means = torch.as_tensor(gm.means_, dtype=torch.float64)
    factors = torch.as_tensor(gm.precisions_cholesky_, dtype=torch.float64)
    weights = torch.as_tensor(gm.weights_, dtype=torch.float64)
    K, D = means.shape
    x64 = X.to(torch.float64)
    out = torch.empty(X.shape[0], K, dtype=torch.float64)
    for k in range(K):
        if form == "float64":
            y = (x64 - means[k]) @ factors[k]
        elif form == "float32":
            y = ((X - means[k].float()) @ factors[k].float()).double()
        elif form == "tf32-centred":
            y = tf32(X - means[k].float()) @ tf32(factors[k])
        elif form == "bf16-centred":
            y = tf32(X - means[k].float(), 7) @ tf32(factors[k], 7)
        elif form == "tf32-folded":
            bias = -(means[k].float() @ factors[k].float())
            y = tf32(X) @ tf32(factors[k]) + tf32(bias)
        else:
            raise ValueError(form)
        log_det = torch.log(torch.diagonal(factors[k])).sum()
        out[:, k] = torch.log(weights[k]) - 0.5 * D * math.log(2 * math.pi) + log_det - 0.5 * y.square().sum(-1)
    return out


def data_sets(n_samples: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    sets = {}
    for kind in ("isotropic", "anisotropic"):
        case = dict(n_samples=n_samples, n_features=64, n_components=64, dtype="float32", device="cpu")
        X, _ = make_data({**case, "data": kind, "covariance_type": "full"})
        sets[f"bench-{kind}"] = (np.asarray(X, dtype=np.float64), 64)
    digits = load_digits().data
    sets["digits"] = (digits[:, digits.std(0) > 0], 10)
    sets["breast-cancer"] = (load_breast_cancer().data, 4)
    sets["wine"] = (load_wine().data, 3)
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tf32", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=50_000, help="rows of the bench mixtures")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args(argv)
    forms = ("float32", "tf32-centred", "tf32-folded", "bf16-centred")
    rows = []
    print(
        f"{'data':16} {'N':>6} {'D':>3} {'K':>3}  " + "  ".join(f"{f + ' rel. bound':>24} {'labels':>8}" for f in forms)
    )
    for name, (X, K) in data_sets(args.n_samples).items():
        X = X - X.mean(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = GaussianMixture(K, covariance_type="full", reg_covar=1e-4, max_iter=30, random_state=0).fit(X)
        X32 = torch.as_tensor(X, dtype=torch.float32)
        exact = log_likelihoods(X32, gm, "float64")
        bound = torch.logsumexp(exact, -1).mean().item()
        labels = exact.argmax(-1)
        row = {"data": name, "n_samples": X.shape[0], "n_features": X.shape[1], "n_components": K, "bound": bound}
        cells = []
        for form in forms:
            lp = log_likelihoods(X32, gm, form)
            relative = abs(torch.logsumexp(lp, -1).mean().item() - bound) / abs(bound)
            agree = (lp.argmax(-1) == labels).double().mean().item()
            row[form] = {"relative_bound_error": relative, "labels_unchanged": agree}
            cells.append(f"{relative:24.2e} {100 * agree:7.3f}%")
        rows.append(row)
        print(f"{name:16} {X.shape[0]:6d} {X.shape[1]:3d} {K:3d}  " + "  ".join(cells), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"method": "TF32 emulated on CPU (inputs rounded to 10 mantissa bits)", "rows": rows}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
