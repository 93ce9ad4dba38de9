"""Checkpoints of a fit: what identifies the fit, the EM state as plain values, and the file.

Owns everything about resuming: the description of a fit (parameters, data shape, initial parameters, seed,
data mean) that a checkpoint must match, the conversion of :class:`~torchgmm.trainer.EMState` to plain values
and back, the checks that refuse another fit's or a damaged checkpoint, and :class:`CheckpointWriter`, the
observer that saves the state every few iterations and when the loop stops on an error. Must not: run EM or
decide what to do with a refused checkpoint (the fitter raises). Files go through
:func:`torchgmm.persistence.write_plain` and :func:`~torchgmm.persistence.read_plain`.

Under ``torch.distributed``, rank 0 writes and every rank reads, so the file must be on a file system the
ranks share; a fit is described by rank 0's seed, the one every rank uses.
"""

from __future__ import annotations

import numbers
import os
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from torchgmm._version import __version__
from torchgmm.data import ScannedData
from torchgmm.em import MixtureParameters
from torchgmm.mstep import Repair, RepairState
from torchgmm.persistence import plain, read_plain, reason, write_plain
from torchgmm.trainer import EMState, Observer

__all__ = [
    "Checkpoint",
    "CheckpointWriter",
    "fit_checkpoint",
    "describe_seed",
    "state_to_plain",
    "state_from_plain",
    "restore",
]

CHECKPOINT_FORMAT = "torchgmm-checkpoint"
CHECKPOINT_VERSION = 2  # 2: tied covariances keep a component axis of one


def describe_seed(random_state: Any) -> int | None:
    """``random_state`` as a checkpoint describes it: an int seed, or None (no seed, or a NumPy generator)."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return None


def fit_checkpoint(
    path: str | os.PathLike,
    settings: dict[str, Any],
    data: ScannedData,
    inits: dict[str, torch.Tensor],
    warm: bool,
    seed: int | None,
) -> Checkpoint:
    """The checkpoint file of a fit, described by all that decides its result.

    ``settings`` are the estimator's (``n_components``, ``covariance_type``, ``tol``, ``reg_covar``,
    ``n_init``, ``init_params``); ``inits`` the given ``*_init`` values; ``warm`` whether it warm-starts;
    ``seed`` rank 0's :func:`describe_seed`. The data's shape and mean come from ``data``.
    """
    fit = {**settings, "warm_start": warm, "random_state": seed}
    fit.update(dtype=str(data.dtype), n_samples=data.n_samples, n_features=data.n_features, **inits)
    return Checkpoint(path, fit, data.shift)


def state_to_plain(state: EMState) -> dict[str, Any]:
    """Plain tensors (on the CPU) and values of ``state``, which ``torch.load(weights_only=True)`` reads."""
    content: dict[str, Any] = {f.name: getattr(state, f.name) for f in fields(state)}
    content["params"] = {f.name: getattr(state.params, f.name).detach().cpu() for f in fields(state.params)}
    content["repairs"] = {
        "reg_covar": state.repairs.reg_covar.cpu(),
        "reseeds": state.repairs.reseeds.cpu(),
        "events": [[list(event) for event in events] for events in state.repairs.events],
    }
    return content


def state_from_plain(content: dict[str, Any], device: torch.device, dtype: torch.dtype) -> EMState:
    """The inverse of :func:`state_to_plain`, with the tensors on ``device`` (parameters in ``dtype``)."""
    params = MixtureParameters(**{name: t.to(device, dtype) for name, t in content["params"].items()})
    events = [[Repair(*event) for event in events] for events in content["repairs"]["events"]]
    repairs = RepairState(content["repairs"]["reg_covar"].to(device), content["repairs"]["reseeds"].to(device), events)
    values = {name: content[name] for name in content if name not in ("params", "repairs")}
    return EMState(params=params, repairs=repairs, **values)


def restore(
    checkpoint: Checkpoint, content: dict[str, Any], device: torch.device, dtype: torch.dtype, shape: tuple[int, ...]
) -> EMState:
    """The state a loaded checkpoint holds; ``shape`` is the ``(R, K, D)`` of its means this fit expects.

    Raises
    ------
    ValueError
        If the state is damaged (entries missing or malformed, or of other shapes).
    """
    try:
        state = state_from_plain(content, device, dtype)
        if tuple(state.params.means.shape) != shape or len(state.lower_bound) != shape[0]:
            raise ValueError(f"its means have shape {tuple(state.params.means.shape)}, not {shape}")
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise checkpoint.damaged(exc) from None
    return state


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
        self.fit = {name: plain(value) for name, value in fit.items()}
        self.data_mean = data_mean.detach().cpu()

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (plain values, :func:`state_to_plain`) with the fit's description."""
        content = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "torchgmm_version": __version__,
            "fit": self.fit,
            "data_mean": self.data_mean,
            "state": state,
        }
        write_plain(self.path, content)

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
            content = read_plain(self.path)
        except Exception as exc:  # as for model files
            raise ValueError(
                f"{self.path} is not a readable torchgmm checkpoint ({reason(exc)}); "
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
        return ValueError(f"{self.path} is a damaged torchgmm checkpoint ({reason(exc)}); delete it to start over.")

    def remove(self) -> None:
        """Delete the file (once the fit it served has finished)."""
        self.path.unlink(missing_ok=True)


class CheckpointWriter(Observer):
    """Saves the EM state every ``interval`` iterations while restarts run, and when the loop stops on an error."""

    def __init__(self, checkpoint: Checkpoint, interval: int) -> None:
        self.checkpoint, self.interval = checkpoint, interval

    def save(self, state: EMState) -> None:
        self.checkpoint.save(state_to_plain(state))

    def iteration(self, state, largest_change):
        if state.iteration % self.interval == 0 and state.active:
            self.save(state)

    def stopped(self, state, error):
        if error is None:
            return
        try:
            self.save(state)
        except Exception as exc:  # the original error matters more
            warnings.warn(f"Could not write the checkpoint: {exc}", RuntimeWarning, stacklevel=4)


class _Absent:
    def __repr__(self) -> str:
        return "not given"


_ABSENT = _Absent()


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
