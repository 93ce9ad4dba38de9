"""Input checks and conversions shared by the user-facing layers.

Owns the checks of what users pass (scalars, arrays, dtypes, devices, seeds, initial parameters) with
scikit-learn's messages, and the conversions between NumPy arrays and tensors that make outputs follow inputs.
Must not: fit, read files, or know estimators (it takes values, not objects with attributes).
"""

from __future__ import annotations

import math
import numbers
import secrets
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

_FLOAT_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    torch.float32: torch.float32,
    torch.float64: torch.float64,
}


def resolve_dtype(dtype: Any, X: Tensor | None = None) -> torch.dtype:
    """The compute dtype: ``dtype`` if given, else X's float dtype (float32 for other input)."""
    if dtype is None:
        return torch.float64 if X is not None and X.dtype == torch.float64 else torch.float32
    key = dtype
    if isinstance(dtype, (np.dtype, type)) and not isinstance(dtype, torch.dtype):
        try:
            key = np.dtype(dtype).name
        except TypeError:
            key = dtype
    try:
        known = key in _FLOAT_DTYPES
    except TypeError:  # unhashable, e.g. a list
        known = False
    if not known:
        raise ValueError(f"Invalid value for 'dtype': {dtype!r}. Use None, 'float32' or 'float64'.")
    return _FLOAT_DTYPES[key]


def resolve_device(device: Any, X: Tensor | None = None) -> torch.device:
    """The compute device: ``device`` if given, else where X lives (CPU for NumPy input)."""
    if device is None:
        return X.device if X is not None else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"Invalid value for 'device': {device!r}. Use None, 'cpu', 'cuda' or 'cuda:N'.") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested but CUDA is not available on this machine.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
        if resolved.index is None:  # 'cuda' means the current device; name it, so device comparisons hold
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def foreign_namespace(X: Any) -> Any | None:
    """The array API namespace of an array that is neither a tensor nor a NumPy array (CuPy, array-api-strict).

    None for tensors, NumPy arrays and anything without ``__array_namespace__``.
    """
    if isinstance(X, (Tensor, np.ndarray)) or not hasattr(X, "__array_namespace__"):
        return None
    return X.__array_namespace__()


def as_tensor(X: Any, name: str = "X") -> Tensor:
    """A detached tensor view of ``X`` (a tensor, a NumPy array, another array API array or an array-like).

    An array of another array API library is read through DLPack, without a copy where the library allows
    it and on its own device (a CuPy array becomes a CUDA tensor).
    """
    if isinstance(X, Tensor):
        t = X.detach()
    elif foreign_namespace(X) is not None and hasattr(X, "__dlpack__"):
        try:
            t = torch.from_dlpack(X)
        except (BufferError, RuntimeError, TypeError, ValueError):  # a device or dtype DLPack cannot carry
            t = as_tensor(np.asarray(X), name)
    else:
        if type(X).__module__.startswith("scipy.sparse"):
            raise TypeError(
                f"Sparse {name} is not supported: a Gaussian mixture needs dense rows. "
                f"Convert it with {name}.toarray()."
            )
        try:
            arr = np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from None
        if arr.dtype == object:
            try:
                arr = arr.astype(np.float64)  # e.g. a list of Python numbers, or a data frame's .values
            except (TypeError, ValueError) as exc:
                # NumPy's own type and words, as scikit-learn lets them through ("could not convert string
                # to float: 'a'", "float() argument must be a string or a real number, not 'dict'")
                raise type(exc)(f"{name} must contain numbers, got an array of dtype object: {exc}") from None
        if arr.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: {name} has dtype {arr.dtype}; a mixture needs real numbers.")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must contain numbers, got an array of dtype {arr.dtype}.")
        with warnings.catch_warnings():
            # a read-only array (a memory map, say) is only ever read: torch's warning would be noise
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.as_tensor(arr)
    if t.is_complex():
        raise ValueError(f"Complex data not supported: {name} has dtype {t.dtype}; a mixture needs real numbers.")
    return t


def check_array(X: Any, *, n_features: int | None = None, name: str = "X") -> Tensor:
    """``X`` as a finite 2-D tensor ``[N, D]`` with at least one row (and ``n_features`` columns)."""
    t = as_tensor(X, name)
    if t.numel() == 0 and t.dim() < 2:
        raise ValueError(f"{name} is empty: it gave no rows.")
    check_2d(tuple(t.shape), name)
    if t.shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={tuple(t.shape)}) while a minimum of 1 is required: {name} has "
            "no rows."
        )
    if t.shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(t.shape)}) while a minimum of 1 is required: {name} has "
            "no columns."
        )
    if n_features is not None and t.shape[1] != n_features:
        raise ValueError(
            f"{name} has {t.shape[1]} features, but GaussianMixture is expecting {n_features} features as input."
        )
    bad = first_not_finite(t)
    if bad is not None:
        row, col, what = bad
        raise ValueError(
            f"Input {name} contains {what} (first at row {row}, column {col}); remove or impute those values."
        )
    return t


def check_2d(shape: tuple[int, ...], name: str = "X") -> None:
    """Raise ``ValueError`` unless ``shape`` has two axes.

    The message is scikit-learn's (code and tests match on "Expected 2D array" and "Reshape your data"),
    with the name and the shape added.
    """
    if len(shape) < 2:
        kind = "scalar" if len(shape) == 0 else "1D"
        raise ValueError(
            f"Expected 2D array, got {kind} array instead ({name} has shape {shape}). Reshape your data "
            f"either using {name}.reshape(-1, 1) if your data has a single feature or {name}.reshape(1, -1) if it "
            "contains a single sample."
        )
    if len(shape) > 2:
        raise ValueError(
            f"Found array with dim {len(shape)} ({name} has shape {shape}); expected a 2D array of shape "
            "(n_samples, n_features)."
        )


def first_not_finite(t: Tensor) -> tuple[int, int, str] | None:
    """``(row, column, "NaN" or "infinity")`` of the first value of a 2-D ``t`` that is not finite; or None."""
    if not t.is_floating_point():
        return None
    finite = torch.isfinite(t)
    if bool(finite.all()):
        return None
    row, col = (~finite).nonzero()[0].tolist()
    return row, col, "NaN" if bool(torch.isnan(t[row, col])) else "infinity"


def output_like(t: Tensor, like: Any) -> Any:
    """``t`` in the kind of ``like``: a tensor on like's device, an array of like's array API library on its
    device (as scikit-learn's array API support does), else a NumPy array."""
    if isinstance(like, Tensor):
        return t.to(like.device)
    namespace = foreign_namespace(like)
    if namespace is not None:
        if t.device.type != "cpu":  # a GPU library's array from a GPU tensor: no trip through the host
            return namespace.from_dlpack(t.detach())
        return namespace.asarray(t.detach().numpy(), device=getattr(like, "device", None))
    return t.detach().cpu().numpy()


def check_scalar(value: Any, name: str, kind: type, low: float | None = None, high: float | None = None) -> None:
    """Raise TypeError/ValueError unless ``value`` is a ``kind`` in ``[low, high]``."""
    is_kind = (
        isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if kind is int
        else isinstance(value, numbers.Real) and not isinstance(value, bool)
        if kind is float
        else isinstance(value, kind)
    )
    if not is_kind:
        raise TypeError(f"'{name}' must be of type {kind.__name__}, got {value!r} of type {type(value).__name__}.")
    if low is not None and value < low:
        raise ValueError(f"'{name}' must be >= {low}, got {value!r}.")
    if high is not None and value > high:
        raise ValueError(f"'{name}' must be <= {high}, got {value!r}.")
    if kind is float and not np.isfinite(value):
        raise ValueError(f"'{name}' must be finite, got {value!r}.")


def check_beta_start(value: Any, n_restarts: int) -> None:
    """Raise TypeError/ValueError unless ``value`` is None, an inverse temperature in ``(0, 1]``, or one per restart.

    ``anneal_beta_start``: a spread chosen by torchgmm (None), one start for every restart, or one per restart
    (different schedules in one batch).
    """
    name = "anneal_beta_start"
    if value is None:
        return
    if isinstance(value, (list, tuple, np.ndarray)):
        if np.ndim(value) != 1 or len(value) != n_restarts:
            raise ValueError(
                f"'{name}' must be None, one number or a sequence of {n_restarts} numbers, one per restart "
                f"(n_init, or a third of it, rounded up, with strategy='auto'), got shape {np.shape(value)}."
            )
        values = list(value)
    else:
        values = [value]
    for v in values:
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            raise TypeError(
                f"'{name}' must be None, a number in (0, 1] or a sequence of them, got {v!r} of type "
                f"{type(v).__name__}."
            )
        if not 0.0 < float(v) <= 1.0:
            raise ValueError(f"'{name}' must be in (0, 1] (an inverse temperature; 1 is plain EM), got {v!r}.")


def check_sample_weight(sample_weight: Any, n_rows: int, positive: bool = False) -> Tensor:
    """``sample_weight`` as a float64 CPU tensor of ``n_rows`` finite, non-negative values.

    Any 1-D array-like, tensor or array API array. ``positive``: at least one weight must be positive (the rows
    of a score; a fit checks that over all ranks, :meth:`torchgmm.data.ScannedData.with_weights`).
    """
    w = weight_tensor(sample_weight, "sample_weight")
    if w.dim() != 1 or w.shape[0] != n_rows:
        raise ValueError(f"sample_weight.shape == {tuple(w.shape)}, expected ({n_rows},): one weight per row of X.")
    row = first_bad_weight(w)
    if row is not None:
        raise ValueError(f"sample_weight must be finite and non-negative; row {row} has {float(w[row])!r}.")
    if positive and not bool((w > 0).any()):
        raise ValueError("sample_weight is zero for every row: at least one row must have a positive weight.")
    return w


def weight_tensor(weights: Any, what: str) -> Tensor:
    """Weights (a tensor or any array-like of numbers) as a float64 CPU tensor; TypeError naming ``what``."""
    if isinstance(weights, Tensor):
        return weights.detach().to("cpu", torch.float64)
    try:
        return torch.as_tensor(np.asarray(weights, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a 1-D array of numbers, got {type(weights).__name__}.") from None


def first_bad_weight(w: Tensor) -> int | None:
    """The index of the first weight that is negative, NaN or infinite, or None."""
    bad = ~torch.isfinite(w) | (w < 0)
    return int(bad.nonzero()[0]) if bool(bad.any()) else None


FIXED_PARAMS = ("weights", "means", "covariances")


def fixed_parameter_names(value: Any) -> tuple[str, ...]:
    """``fixed_params`` as parameter names: an iterable of ``'weights'``, ``'means'``, ``'covariances'``, or a
    string of their letters (``'wm'``: weights and means; ``''``: none). Raises TypeError/ValueError otherwise."""
    letters = {name[0]: name for name in FIXED_PARAMS}
    if isinstance(value, str):
        names = []
        for letter in value:
            if letter not in letters:
                raise ValueError(
                    f"Invalid letter {letter!r} in 'fixed_params': {value!r}. Letters are 'w' (weights), 'm' (means) "
                    "and 'c' (covariances)."
                )
            names.append(letters[letter])
    elif isinstance(value, (list, tuple, set, frozenset)):
        names = list(value)
        for name in names:
            if name not in FIXED_PARAMS:
                raise ValueError(
                    f"Invalid value in 'fixed_params': {name!r}. Each must be one of {list(FIXED_PARAMS)}."
                )
    else:
        raise TypeError(
            "'fixed_params' must be a sequence of 'weights', 'means', 'covariances' or a string of their letters "
            f"('wmc'), got {type(value).__name__}."
        )
    return tuple(name for name in FIXED_PARAMS if name in names)


def check_fixed_params(value: Any, given: set[str], strategy: str) -> None:
    """Raise unless ``fixed_params`` is valid, each held parameter has an initial value, and ``strategy`` keeps
    them (``given``: the names of the ``*_init`` passed)."""
    names = fixed_parameter_names(value)
    for name, init in (("means", "means_init"), ("covariances", "precisions_init")):
        if name in names and init not in given:
            raise ValueError(
                f"fixed_params holds the {name} at their initial value, but {init} is None: give {init} "
                "(weights fixed without weights_init are uniform)."
            )
    if names and strategy in ("split-merge", "auto"):
        raise ValueError(
            f"strategy={strategy!r} moves components, which fixed_params={value!r} holds: use strategy='restarts', "
            "'race' or 'anneal' with fixed parameters."
        )


def make_generator(random_state: Any, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` seeded from ``random_state``.

    ``None`` draws a fresh seed; an int seeds deterministically; a NumPy
    ``RandomState`` or ``Generator`` gives up one draw as the seed (so two fits
    with the same instance differ, as in scikit-learn).
    """
    if random_state is None:
        seed = secrets.randbits(63)
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"'random_state' must be a non-negative int, got {random_state}.")
        seed = int(random_state)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(np.iinfo(np.int32).max))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(2**63 - 1))
    else:
        raise TypeError(
            "'random_state' must be None, an int, a numpy.random.RandomState or a numpy.random.Generator, "
            f"got {type(random_state).__name__}."
        )
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def check_initial_parameters(
    given: dict[str, Any], n_components: int, n_features: int, covariance: Any
) -> dict[str, Tensor]:
    """The given ``weights_init``, ``means_init``, ``precisions_init`` (None: not given) as float64 CPU tensors.

    ``covariance`` is the :class:`~torchgmm.covariance.CovarianceType` whose shape and checks the precisions
    follow. Raises ``ValueError`` with scikit-learn's messages for a wrong shape, a non-finite value, weights
    outside [0, 1] or not summing to one, and precisions that are not valid.
    """
    K, D = n_components, n_features
    # scikit-learn's words name the quantity ('weights', 'means', 'full precision'); the parameter follows
    quantities = {"weights_init": "weights", "means_init": "means", "precisions_init": f"{covariance.name} precision"}
    checked = {}
    for name, expected in (("weights_init", (K,)), ("means_init", (K, D)), ("precisions_init", covariance.shape(K, D))):
        value = given.get(name)
        if value is None:
            continue
        t = as_tensor(value, name).to("cpu", torch.float64)
        if tuple(t.shape) != expected:
            raise ValueError(
                f"The parameter '{quantities[name]}' should have the shape of {expected}, but got {tuple(t.shape)} "
                f"for {name}."
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"The parameter '{name}' contains NaN or infinity.")
        checked[name] = t
    if "weights_init" in checked:
        w = checked["weights_init"]
        if bool((w < 0).any()) or bool((w > 1).any()):
            raise ValueError(
                "The parameter 'weights' should be in the range [0, 1], but got "
                f"max value {float(w.max()):.5f}, min value {float(w.min()):.5f} for weights_init."
            )
        if not math.isclose(float(w.sum()), 1.0, rel_tol=0, abs_tol=1e-6):
            raise ValueError(
                f"The parameter 'weights' should be normalized, but got sum(weights) = {float(w.sum()):.5f} "
                "for weights_init."
            )
    if "precisions_init" in checked:
        covariance.check_precisions(checked["precisions_init"])
    return checked
