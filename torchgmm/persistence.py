"""Model and checkpoint files, saved and loaded without executing code.

The file is a ``torch.save`` archive of plain values only — tensors, numbers,
strings, lists and dicts — so :func:`load` reads it with
``torch.load(weights_only=True)``, which refuses anything that would run code
(unlike pickle). It holds the format version, the library version, the
constructor parameters and every fitted attribute. Writing goes to a temporary
file in the same folder, renamed over the target only once complete, so an
interrupted save never leaves a half-written model.

A checkpoint (:class:`Checkpoint`) is the same kind of file holding the EM
loop's state (:class:`~torchgmm.trainer.EMState`) and a description of the fit
it belongs to, so that a fit can resume from it and refuse one of another fit.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchgmm._files import write_atomic
from torchgmm._version import __version__
from torchgmm.repair import Repair

FORMAT = "torchgmm-model"
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = "torchgmm-checkpoint"
CHECKPOINT_VERSION = 1

_ARRAYS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
_SCALARS = ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_", "init_lower_bounds_history_")


def _plain(value: Any) -> Any:
    """A value ``torch.load(weights_only=True)`` can read back: tensors for arrays, builtins otherwise."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, torch.device | torch.dtype):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):  # a Repair (a named tuple) too
        return [_plain(v) for v in value]
    return None  # e.g. a NumPy RandomState: not storable as data; the loaded model gets None


def save(estimator: Any, path: str | os.PathLike) -> None:
    """Write a fitted estimator to ``path`` (see the module docstring for the format)."""
    estimator._check_is_fitted()
    params = {name: _plain(value) for name, value in estimator.get_params().items()}
    fitted = {name: _plain(getattr(estimator, name)) for name in (*_ARRAYS, *_SCALARS)}
    fitted["init_lower_bounds_"] = _plain(np.asarray(estimator.init_lower_bounds_))
    fitted["init_converged_"] = _plain(np.asarray(estimator.init_converged_))
    fitted["init_repairs_"] = _plain(getattr(estimator, "init_repairs_", []))
    fitted["repairs_"] = _plain(getattr(estimator, "repairs_", []))
    means = estimator.means_
    content = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "torchgmm_version": __version__,
        "params": params,
        "fitted": fitted,
        "outputs": "torch" if isinstance(means, torch.Tensor) else "numpy",
        "device": str(means.device) if isinstance(means, torch.Tensor) else "cpu",
    }
    _write_atomic(content, path)


def _write_atomic(content: dict, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`torchgmm._files.write_atomic`."""
    write_atomic(path, lambda temporary: torch.save(content, temporary))


def load(path: str | os.PathLike, map_location: str | torch.device | None = None) -> Any:
    """Read a model file written by :func:`save`; returns a fitted ``GaussianMixture``.

    Outputs follow what was saved (NumPy arrays, or tensors on the saved
    device); ``map_location`` puts tensors elsewhere (e.g. ``'cpu'`` for a
    model fitted on a GPU).

    Raises
    ------
    ValueError
        If the file is not a torchgmm model file (or holds code rather than data),
        or ``map_location`` is not a device.
    """
    if map_location is not None:
        try:
            torch.device(map_location)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"Invalid value for 'map_location': {map_location!r}. Use None, 'cpu', 'cuda' or 'cuda:N'."
            ) from None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # pickle errors, weights_only refusals (code, not data), truncated files
        raise ValueError(f"{path} is not a readable torchgmm model file ({_reason(exc)}).") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError(f"{path} is not a torchgmm model file.")
    version = content.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{path} is a damaged torchgmm model file: its format version is {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by torchgmm {content.get('torchgmm_version')} in model format "
            f"{content['format_version']}; this torchgmm ({__version__}) reads format {FORMAT_VERSION}. Upgrade it."
        )
    try:
        return _estimator(content, path, map_location)
    except (KeyError, TypeError, AttributeError) as exc:  # a missing or malformed entry
        raise ValueError(f"{path} is a damaged torchgmm model file ({_reason(exc)}).") from None


def _estimator(content: dict, path: Any, map_location: Any) -> Any:
    """The fitted estimator a model file's content describes."""
    from torchgmm.estimator import GaussianMixture

    params = dict(content["params"])
    for name in ("weights_init", "means_init", "precisions_init"):
        if isinstance(params.get(name), torch.Tensor):
            params[name] = params[name].numpy()
    estimator = GaussianMixture(**params)
    fitted = content["fitted"]
    as_torch = content["outputs"] == "torch"
    device = torch.device(map_location) if map_location is not None else torch.device(content["device"])
    if as_torch and device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{path} holds a model on {device}, and CUDA is not available: load it with map_location='cpu'."
        )
    for name in _ARRAYS:
        value = fitted[name]
        setattr(estimator, name, value.to(device) if as_torch else value.numpy())
    for name in _SCALARS:
        setattr(estimator, name, fitted[name])
    estimator.init_lower_bounds_ = fitted["init_lower_bounds_"].numpy()
    estimator.init_converged_ = fitted["init_converged_"].numpy()
    # (absent from files written before repairs were recorded)
    estimator.init_repairs_ = [[Repair(*r) for r in events] for events in fitted.get("init_repairs_", [])]
    estimator.repairs_ = [Repair(*r) for r in fitted.get("repairs_", [])]
    return estimator


class Checkpoint:
    """The checkpoint file of one fit: EM state, written atomically, read back only by the same fit.

    Parameters
    ----------
    path : str or os.PathLike
    fit : dict
        What identifies the fit: parameters, data shape, initial parameters,
        plain values or tensors. A checkpoint whose description differs is refused.
    data_mean : Tensor of shape (D,), float64
        The data's mean, which the state's parameters are centred on. A
        checkpoint is refused unless its data mean agrees to about 1e-9
        (it may differ in the last digits with a different ``batch_size``).
    """

    def __init__(self, path: str | os.PathLike, fit: dict[str, Any], data_mean: torch.Tensor) -> None:
        self.path = Path(path)
        self.fit = {name: _plain(value) for name, value in fit.items()}
        self.data_mean = data_mean.detach().cpu()

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (plain values, :meth:`EMState.to_plain`) with the fit's description."""
        content = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "torchgmm_version": __version__,
            "fit": self.fit,
            "data_mean": self.data_mean,
            "state": state,
        }
        _write_atomic(content, self.path)

    def load(self) -> tuple[dict[str, Any], torch.Tensor] | None:
        """``(state, data_mean)`` from the file, or None if there is none.

        Raises
        ------
        ValueError
            If the file is not a torchgmm checkpoint, or belongs to another fit
            or other data (the message names the first difference).
        """
        if not self.path.exists():
            return None
        try:
            content = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # as for model files
            raise ValueError(
                f"{self.path} is not a readable torchgmm checkpoint ({_reason(exc)}); "
                "delete it or choose another checkpoint_path."
            ) from None
        if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.path} is not a torchgmm checkpoint; delete it or choose another checkpoint_path.")
        if content.get("format_version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{self.path} was written by torchgmm {content.get('torchgmm_version')} in checkpoint format "
                f"{content.get('format_version')!r}; this torchgmm ({__version__}) reads format "
                f"{CHECKPOINT_VERSION}. Delete it to start the fit over."
            )
        saved = content.get("fit")
        saved = saved if isinstance(saved, dict) else {}
        for name in [*self.fit, *(k for k in saved if k not in self.fit)]:
            there, here = saved.get(name, _ABSENT), self.fit.get(name, _ABSENT)
            if not _same(there, here):
                raise ValueError(
                    f"{self.path} is the checkpoint of another fit: {name} is {_short(there)} there and "
                    f"{_short(here)} here. Delete it, or choose another checkpoint_path."
                )
        mean = content.get("data_mean")
        scale = float(self.data_mean.abs().max()) if self.data_mean.numel() else 0.0
        if not (
            isinstance(mean, torch.Tensor)
            and mean.shape == self.data_mean.shape
            and torch.allclose(mean, self.data_mean, rtol=1e-9, atol=1e-9 * scale)
        ):
            raise ValueError(
                f"{self.path} is the checkpoint of a fit on other data (the mean of the rows differs). "
                "Delete it, or choose another checkpoint_path."
            )
        state = content.get("state")
        if not isinstance(state, dict):
            raise self.damaged(TypeError(f"its state is a {type(state).__name__}, not a dict"))
        return state, mean

    def damaged(self, exc: BaseException) -> ValueError:
        """The error for a checkpoint whose state cannot be used (entries missing or malformed)."""
        return ValueError(f"{self.path} is a damaged torchgmm checkpoint ({_reason(exc)}); delete it to start over.")

    def remove(self) -> None:
        """Delete the file (once the fit it served has finished)."""
        self.path.unlink(missing_ok=True)


class _Absent:
    def __repr__(self) -> str:
        return "not given"


_ABSENT = _Absent()


def _reason(exc: BaseException) -> str:
    """``Type: first line`` of why a file could not be read or used, for one-line messages."""
    reason = (str(exc).splitlines() or [""])[0][:80]
    if isinstance(exc, pickle.UnpicklingError):  # torch's text is advice on loading it unsafely
        reason = "not plain tensors and values saved with torch.save"
    return f"{type(exc).__name__}: {reason}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if a is _ABSENT or b is _ABSENT:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b  # reg_covar=0 and 0.0 are the same fit
    return type(a) is type(b) and a == b


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"an array of shape {tuple(value.shape)}"
    return repr(value)
