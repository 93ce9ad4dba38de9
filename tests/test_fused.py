"""The fused Triton E-step (torchgmm.fused) against the torch kernels run in float64.

Without a GPU the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set by conftest.py before
torchgmm is imported); with one, on CUDA. Skipped where Triton is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, make_blobs

from torchgmm import ConvergenceWarning, GaussianMixture, fused, kernels, passes
from torchgmm.covariance import get_covariance_type
from torchgmm.em import MixtureParameters, Statistics

pytestmark = pytest.mark.skipif(not fused.available(), reason="Triton is not installed (pip install triton)")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
runnable = pytest.mark.skipif(
    DEVICE == "cpu" and not fused.interpreted(),
    reason="no CUDA device, and Triton's interpreter was not on when torchgmm.fused was imported",
)


def _parameters(covariance_type: str, R: int, K: int, D: int, seed: int):
    """Random weights, means and precision factors (upper-triangular for full and tied) in float64."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.softmax(torch.randn(R, K, generator=g, dtype=torch.float64), -1)
    means = torch.randn(R, K, D, generator=g, dtype=torch.float64)
    if covariance_type in ("full", "tied"):
        n_cov = K if covariance_type == "full" else 1
        A = torch.randn(R, n_cov, D, D, generator=g, dtype=torch.float64) / D**0.5
        covariances = A @ A.mT + 0.3 * torch.eye(D, dtype=torch.float64)
        # P = L^-T with L L^T the covariance: P P^T is the precision, as scikit-learn's precisions_cholesky_
        factors = torch.linalg.solve_triangular(
            torch.linalg.cholesky(covariances), torch.eye(D, dtype=torch.float64).expand_as(covariances), upper=False
        ).mT.contiguous()
    elif covariance_type == "diag":
        factors = torch.rand(R, K, D, generator=g, dtype=torch.float64) + 0.5
    else:
        factors = torch.rand(R, K, generator=g, dtype=torch.float64) + 0.5
    return weights, means, factors


def _statistics(kernel, X, weights, means, factors, covariance, dtype):
    R, K, D = means.shape
    to = dict(dtype=dtype, device=DEVICE)
    prepared = kernel.prepare(weights.to(**to), means.to(**to), factors.to(**to))
    into = Statistics.zeros(covariance, R, K, D, dtype, torch.device(DEVICE))
    kernel.accumulate(X.to(**to), prepared, into)
    return kernel.finish(into.to(torch.float64), means.to(**to), factors.to(**to))


@runnable
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize(("R", "K", "D", "n", "segment_rows"), [(2, 3, 5, 100, 1024), (1, 20, 17, 203, 32)])
def test_statistics_match_the_torch_kernel(monkeypatch, covariance_type, R, K, D, n, segment_rows):
    """Every statistic within float32 rounding of the torch kernel in float64: rows not a multiple of the
    programs' blocks, features padded to a power of two, components in several blocks, several segments."""
    monkeypatch.setattr(fused, "_MIN_SEGMENT_ROWS", segment_rows)
    covariance = get_covariance_type(covariance_type)
    weights, means, factors = _parameters(covariance_type, R, K, D, seed=K + D)
    X = torch.randn(n, D, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * 1.5
    expected = _statistics(kernels.kernel_for(covariance), X, weights, means, factors, covariance, torch.float64)
    got = _statistics(fused.kernel_for(covariance), X, weights, means, factors, covariance, torch.float32)
    for name, e, g in zip(Statistics._fields, expected, got, strict=True):
        assert g.shape == e.shape, name
        scale = float(e.abs().max())
        np.testing.assert_allclose(g.cpu().numpy(), e.cpu().numpy(), rtol=0, atol=2e-5 * scale, err_msg=name)


@runnable
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_a_fit_through_the_fused_kernel_matches_the_torch_kernels(monkeypatch, covariance_type):
    X, _ = make_blobs(60, 3, 3, 5.0, seed=2)
    X = torch.as_tensor(X, dtype=torch.float32, device=DEVICE)
    rng = np.random.default_rng(0)
    start = dict(means_init=X[rng.choice(len(X), 3, replace=False)].double().cpu().numpy())
    calls = []
    accumulate = fused.FusedKernel.accumulate

    def counted(self, *args, **kwargs):
        calls.append(self.covariance.name)
        return accumulate(self, *args, **kwargs)

    monkeypatch.setattr(fused.FusedKernel, "accumulate", counted)
    fits = {}
    for choice in ("torch", "triton"):
        monkeypatch.setenv(fused.KERNEL_ENV, choice)
        gm = GaussianMixture(3, covariance_type=covariance_type, n_init=2, max_iter=4, tol=0.0, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[choice] = gm.set_params(**start).fit(X)
        assert len(calls) == (0 if choice == "torch" else 4), calls
    torch_fit, triton_fit = fits["torch"], fits["triton"]
    assert triton_fit.lower_bound_ == pytest.approx(torch_fit.lower_bound_, rel=1e-5)
    np.testing.assert_allclose(triton_fit.means_.cpu(), torch_fit.means_.cpu(), atol=1e-4)
    np.testing.assert_allclose(triton_fit.covariances_.cpu(), torch_fit.covariances_.cpu(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(triton_fit.predict(X).cpu(), torch_fit.predict(X).cpu())


def _params(dtype=torch.float32, device="cpu") -> MixtureParameters:
    weights, means, factors = _parameters("full", 1, 2, 3, seed=0)
    covariances = torch.linalg.inv(factors @ factors.mT)
    return MixtureParameters(weights, means, covariances, factors).map(lambda t: t.to(dtype=dtype, device=device))


def test_the_kernel_is_chosen_by_device_dtype_and_environment(monkeypatch):
    covariance = get_covariance_type("full")
    monkeypatch.delenv(fused.KERNEL_ENV, raising=False)
    kernel, dtype = passes.choose_kernel(_params(), covariance)
    assert type(kernel) is kernels.WhitenedKernel and dtype == torch.float32  # auto: the torch kernels on CPU
    monkeypatch.setenv(fused.KERNEL_ENV, "torch")
    assert type(passes.choose_kernel(_params(), covariance)[0]) is kernels.WhitenedKernel
    monkeypatch.setenv(fused.KERNEL_ENV, "Triton")
    expected = fused.FusedKernel if fused.interpreted() else kernels.WhitenedKernel
    assert type(passes.choose_kernel(_params(), covariance)[0]) is expected
    # float64 passes always take the torch kernels, and so do tempered ones (annealing: no beta in the fused one)
    assert type(passes.choose_kernel(_params(torch.float64), covariance)[0]) is kernels.WhitenedKernel
    assert type(passes.choose_kernel(_params(), covariance, tempered=True)[0]) is kernels.WhitenedKernel
    if torch.cuda.is_available():
        monkeypatch.delenv(fused.KERNEL_ENV)
        assert type(passes.choose_kernel(_params(device="cuda"), covariance)[0]) is fused.FusedKernel
        assert type(passes.choose_kernel(_params(device="cuda"), covariance, True)[0]) is kernels.WhitenedKernel


def test_an_unknown_kernel_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv(fused.KERNEL_ENV, "cuda")
    with pytest.raises(ValueError, match=r"TORCHGMM_KERNEL: 'cuda'. It must be one of \['auto', 'torch', 'triton'\]"):
        passes.choose_kernel(_params(), get_covariance_type("full"))


def test_triton_asked_for_but_not_installed(monkeypatch):
    monkeypatch.setattr(fused, "triton", None)
    monkeypatch.setenv(fused.KERNEL_ENV, "triton")
    with pytest.raises(ValueError, match="Triton cannot be imported"):
        passes.choose_kernel(_params(), get_covariance_type("full"))
    monkeypatch.setenv(fused.KERNEL_ENV, "auto")  # auto goes on with the torch kernels
    assert type(passes.choose_kernel(_params(), get_covariance_type("full"))[0]) is kernels.WhitenedKernel


def test_the_kernels_compile_for_a_gpu_without_one():
    """The interpreter runs the kernels' Python; this compiles them for sm_90 (H100/H200) with Triton's own
    ptxas, which catches what the interpreter lets through (types, shapes ``tl.dot`` accepts)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.compile_check", "--arch", "90"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    compiled = [line for line in done.stdout.splitlines() if "compiled in" in line]
    assert len(compiled) == 7 and all("registers per thread" in line for line in compiled), done.stdout
