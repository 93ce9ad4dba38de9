"""One adapter per library: build a fit of a given number of EM iterations from fixed start parameters.

Each adapter returns ``make(iterations) -> callable`` so that the bench can
time whole fits with ``iterations`` and with 0 iterations and take the
difference: the per-iteration cost, free of set-up, initialisation and the
final pass every library makes. A library that is not installed, or cannot
run the case, raises :class:`Skip` with the reason printed in the table.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np
import torch


class Skip(Exception):
    """The library cannot run this case; the message says why."""


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _require_full_or_diag(case: dict) -> None:
    if case["covariance_type"] not in ("full", "diag"):
        raise Skip(f"no {case['covariance_type']} covariance")


def _start_covariances(start: dict, case: dict) -> np.ndarray:
    """The start's covariances (float64) for peers that take covariances, not precisions."""
    precisions = np.asarray(start["precisions_init"], dtype=np.float64)
    return np.linalg.inv(precisions) if case["covariance_type"] == "full" else 1.0 / precisions


def torchgmm_fit(X, start, case) -> Callable[[int], Callable[[], None]]:
    from torchgmm import GaussianMixture

    data = torch.as_tensor(X, device=case["device"])

    def make(iterations):
        gm = GaussianMixture(
            case["n_components"],
            covariance_type=case["covariance_type"],
            n_init=case["n_init"],
            tol=0.0,
            max_iter=iterations,
            device=case["device"],
            matmul_precision=case.get("matmul_precision"),
            **start,
        )

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm.fit(data)
            _sync(case["device"])

        return run

    return make


def torchgmm_torch_kernels_fit(X, start, case) -> Callable[[int], Callable[[], None]]:
    """torchgmm held to its torch kernels (``TORCHGMM_KERNEL=torch``): on CUDA, the fused Triton E-step's baseline."""
    os.environ["TORCHGMM_KERNEL"] = "torch"  # the worker is a process of its own
    return torchgmm_fit(X, start, case)


def _sklearn_make(data, start: dict, case: dict, array_api: bool) -> Callable[[int], Callable[[], None]]:
    """``make`` for scikit-learn's GaussianMixture on ``data`` (NumPy, or tensors under ``array_api_dispatch``)."""
    import sklearn
    from sklearn.mixture import GaussianMixture

    def make(iterations):
        # scikit-learn runs its restarts one after the other; random_from_data is the
        # cheapest initialisation it always performs before the given start replaces it.
        gm = GaussianMixture(
            case["n_components"],
            covariance_type=case["covariance_type"],
            n_init=case["n_init"],
            tol=0.0,
            max_iter=iterations,
            init_params="random_from_data",
            random_state=0,
            **start,
        )

        def run():
            with sklearn.config_context(array_api_dispatch=array_api), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm.fit(data)
            _sync(case["device"])

        return run

    return make


def sklearn_fit(X, start, case) -> Callable[[int], Callable[[], None]]:
    if not case["device"].startswith("cpu"):
        raise Skip("CPU only")
    try:
        import sklearn.mixture  # noqa: F401
    except ImportError:
        raise Skip("not installed") from None
    start = {k: (v.cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in start.items()}
    return _sklearn_make(X, start, case, array_api=False)


def sklearn_array_api_fit(X, start, case) -> Callable[[int], Callable[[], None]]:
    """scikit-learn's own GaussianMixture on torch tensors, through its array API support.

    What a torch user reaches for first: ``sklearn.config_context(array_api_dispatch=True)`` (the worker
    sets ``SCIPY_ARRAY_API=1`` before SciPy is imported), the data and the start as tensors on the case's
    device. Its k-means initialisations refuse array API input, so it draws ``random_from_data`` first,
    which the given start then replaces, as for scikit-learn on NumPy.
    """
    try:
        import sklearn.mixture  # noqa: F401
    except ImportError:
        raise Skip("not installed") from None
    device = case["device"]
    data = torch.as_tensor(X, device=device)
    start = {k: torch.as_tensor(np.asarray(v), device=device, dtype=data.dtype) for k, v in start.items()}
    make = _sklearn_make(data, start, case, array_api=True)
    try:  # a case it cannot run (an old scikit-learn, SciPy without array API support) is a skip, with why
        make(1)()
    except Exception as exc:  # noqa: BLE001 - any refusal of the library is reported in the table
        raise Skip(f"{type(exc).__name__}: {str(exc)[:100]}") from None
    return make


def cuvs_fit(X, start, case) -> Callable[[int], Callable[[], None]]:
    """NVIDIA cuVS's GMM (``cuvs-cu12``/``cuvs-cu13``), GPU only."""
    if not case["device"].startswith("cuda"):
        raise Skip("GPU only")
    try:
        import cuvs
    except ImportError:
        raise Skip("not installed (pip install cuvs-cu12 or cuvs-cu13)") from None
    try:
        from cuvs.cluster import gmm  # noqa: F401
    except ImportError:
        raise Skip(f"cuvs {getattr(cuvs, '__version__', '?')} has no Python GMM (cuvs.cluster.gmm)") from None
    # cuVS documents its GMM in C++ (cuvs/cluster/gmm.hpp: n_components, covariance type, tol, reg_covar,
    # max_iter, n_init, init method, seed; no given start). Its Python call has not been checked on a GPU
    # with cuVS yet, so the bench says so rather than time a guess.
    raise Skip("installed; its Python GMM call is not yet verified on a GPU (bench/NOTES.md section 9)")


def pomegranate_fit(X, start, case) -> Callable[[int], Callable[[], None]]:
    try:
        from pomegranate.distributions import Normal
        from pomegranate.gmm import GeneralMixtureModel
    except ImportError:
        raise Skip("not installed") from None
    _require_full_or_diag(case)
    device = case["device"]
    data = torch.as_tensor(X, device=device)
    weights = torch.as_tensor(start["weights_init"], dtype=data.dtype)
    means = torch.as_tensor(start["means_init"], dtype=data.dtype)
    covs = torch.as_tensor(_start_covariances(start, case)).to(data.dtype)

    def make(iterations):
        def run():
            for _ in range(case["n_init"]):  # one model per restart: no batching
                components = [
                    Normal(means[k].clone(), covs[k].clone(), covariance_type=case["covariance_type"])
                    for k in range(case["n_components"])
                ]
                model = GeneralMixtureModel(components, priors=weights.clone(), max_iter=iterations, tol=-np.inf)
                if device.startswith("cuda"):
                    model = model.cuda()
                model.fit(data)
            _sync(device)

        return run

    return make


def gmmx_fit(X, start, case) -> Callable[[int], Callable[[], None]]:
    try:
        import jax
        from gmmx import EMFitter, GaussianMixtureModelJax
    except ImportError:
        raise Skip("not installed") from None
    _require_full_or_diag(case)
    if case["device"].startswith("cuda") and jax.default_backend() != "gpu":
        raise Skip("jax has no GPU backend here")
    covs = _start_covariances(start, case)
    X = X.cpu().numpy() if isinstance(X, torch.Tensor) else X
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise Skip("jax runs float32 unless x64 is enabled")
    x = jax.device_put(np.asarray(X, dtype=dtype))
    gmm = GaussianMixtureModelJax.from_squeezed(
        means=np.asarray(start["means_init"], dtype=dtype),
        covariances=covs.astype(dtype),
        weights=np.asarray(start["weights_init"], dtype=dtype),
        covariance_type=case["covariance_type"],
    )

    # JAX computes float32 products in TF32 on recent GPUs by default; match the case's precision.
    precision = "tensorfloat32" if case.get("matmul_precision") == "high" else "float32"

    def make(iterations):
        fitter = EMFitter(tol=-1.0, max_iter=iterations)
        with jax.default_matmul_precision(precision):
            fitter.fit(x=x, gmm=gmm)  # compile outside the timed runs

        def run():
            with jax.default_matmul_precision(precision):
                for _ in range(case["n_init"]):
                    # jax dispatches asynchronously: wait for the loop's outputs
                    result = fitter.fit(x=x, gmm=gmm)
                    jax.block_until_ready((result.log_likelihood, result.gmm.means))

        return run

    return make


def pycave_fit(X, start, case) -> Callable[[int], Callable[[], None]]:
    try:
        import pycave  # noqa: F401
    except ImportError:
        raise Skip("not installed (PyCave 3 needs torch<2 and pytorch-lightning 1.4)") from None
    raise Skip("installed, but its Lightning trainer loop has no fixed-start API to time fairly")


LIBRARIES = {
    "torchgmm": torchgmm_fit,
    "torchgmm-torch": torchgmm_torch_kernels_fit,
    "scikit-learn": sklearn_fit,
    "sklearn-torch": sklearn_array_api_fit,
    "cuvs": cuvs_fit,
    "pomegranate": pomegranate_fit,
    "gmmx": gmmx_fit,
    "pycave": pycave_fit,
}
