"""CUDA paths agree with the CPU path (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import COVARIANCE_TYPES, make_blobs, requires_cuda

from torchgmm import GaussianMixture

pytestmark = requires_cuda


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_cuda_fit_matches_cpu_in_float64(covariance_type):
    X, _ = make_blobs(200, 4, 3, 3.0, seed=0)
    cpu = GaussianMixture(3, covariance_type=covariance_type, random_state=0, tol=1e-8).fit(X)
    init = dict(weights_init=cpu.weights_, means_init=cpu.means_, precisions_init=cpu.precisions_)
    a = GaussianMixture(3, covariance_type=covariance_type, max_iter=20, tol=0, **init)
    b = GaussianMixture(3, covariance_type=covariance_type, max_iter=20, tol=0, device="cuda", **init)
    with pytest.warns(UserWarning):
        a.fit(X)
    with pytest.warns(UserWarning):
        b.fit(X)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-10)


def test_cuda_tensor_in_tensor_out_on_device():
    X, _ = make_blobs(200, 3, 3, 4.0, seed=1)
    Xc = torch.as_tensor(X, dtype=torch.float32, device="cuda")
    gm = GaussianMixture(3, n_init=4, random_state=0).fit(Xc)
    assert gm.means_.device.type == "cuda" and gm.means_.dtype == torch.float32
    labels = gm.predict(Xc)
    assert labels.device.type == "cuda"
    assert isinstance(gm.predict(X.astype(np.float32)), np.ndarray)
    Xs, ys = gm.sample(100)
    assert Xs.device.type == "cuda" and ys.shape == (100,)


@pytest.mark.parametrize("kind", ["numpy", "chunks", "memmap"])
def test_host_sources_streamed_to_cuda_match_cpu(kind, tmp_path):
    """Host data copied chunk by chunk (pinned memory, side stream) gives the CPU fit."""
    X, _ = make_blobs(400, 3, 3, 3.0, seed=2)
    cpu = GaussianMixture(3, random_state=0, tol=1e-8).fit(X)
    init = dict(weights_init=cpu.weights_, means_init=cpu.means_, precisions_init=cpu.precisions_)
    if kind == "numpy":
        source = X
    elif kind == "chunks":
        source = [X[i : i + 101] for i in range(0, len(X), 101)]
    else:
        np.save(tmp_path / "X.npy", X)
        source = np.load(tmp_path / "X.npy", mmap_mode="r")
    a = GaussianMixture(3, max_iter=10, tol=0, batch_size=37, **init)
    b = GaussianMixture(3, max_iter=10, tol=0, batch_size=37, device="cuda", **init)
    with pytest.warns(UserWarning):
        a.fit(source)
    with pytest.warns(UserWarning):
        b.fit(source)
    np.testing.assert_allclose(np.asarray(b.means_), np.asarray(a.means_), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.asarray(b.covariances_), np.asarray(a.covariances_), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(b.predict(source)), np.asarray(a.predict(source)))


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_device_named_and_data_already_there(device, covariance_type):
    """device='cuda' with CUDA data (in memory or as chunks) reads it in place, as the CPU fit."""
    X, _ = make_blobs(300, 3, 3, 4.0, seed=4)
    cpu = GaussianMixture(3, covariance_type=covariance_type, random_state=0, tol=1e-8).fit(X)
    init = dict(weights_init=cpu.weights_, means_init=cpu.means_, precisions_init=cpu.precisions_)
    Xc = torch.as_tensor(X, device="cuda")
    for source in (Xc, [Xc[i : i + 64] for i in range(0, len(X), 64)]):
        gm = GaussianMixture(3, covariance_type=covariance_type, max_iter=5, tol=0, device=device, **init)
        with pytest.warns(UserWarning):
            gm.fit(source)
        np.testing.assert_allclose(gm.means_.cpu().numpy(), cpu.means_, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_tf32_fit_is_close_to_float32(covariance_type):
    """matmul_precision='high' (TF32) lands within 1e-3 relative of the float32 lower bound."""
    X, _ = make_blobs(20000, 16, 8, 4.0, seed=5)
    Xc = torch.as_tensor(X, dtype=torch.float32, device="cuda")
    fits = [
        GaussianMixture(8, covariance_type=covariance_type, random_state=0, matmul_precision=p).fit(Xc)
        for p in ("highest", "high")
    ]
    assert torch.get_float32_matmul_precision() == "highest"
    assert abs(fits[1].lower_bound_ - fits[0].lower_bound_) <= 1e-3 * abs(fits[0].lower_bound_)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_many_nearly_empty_components_in_float32_on_cuda(covariance_type):
    from test_maths import fit_many_nearly_empty_components

    fit_many_nearly_empty_components(covariance_type, "cuda")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_module_on_cuda_matches_cpu(covariance_type):
    """to_module on a CUDA fit, .to() between devices, gradients and online EM on the GPU."""
    X, _ = make_blobs(500, 3, 3, 4.0, seed=6)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(torch.as_tensor(X, device="cuda"))
    module = gm.to_module(learnable=True)
    assert module.means.device.type == "cuda"
    x = torch.as_tensor(X[:50], device="cuda").requires_grad_()
    out = module.log_prob(x)
    out.sum().backward()
    assert x.grad.device.type == "cuda" and all(p.grad is not None for p in module.parameters())
    cpu = gm.to_module().to("cpu")
    torch.testing.assert_close(cpu.log_prob(x.detach().cpu()), out.detach().cpu())
    with pytest.raises(ValueError, match=r"Input is on cpu but the mixture is on cuda"):
        module.log_prob(x.detach().cpu())
    before = module.means.detach().clone()
    module.partial_fit(torch.as_tensor(X[50:300], device="cuda"))
    assert int(module.n_steps) == 1 and not torch.equal(module.means.detach(), before)
