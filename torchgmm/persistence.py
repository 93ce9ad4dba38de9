"""Model files: plain values written and read without executing code.

Owns the file format: a ``torch.save`` archive of plain values only (tensors, numbers, strings, lists and
dicts), read back with ``torch.load(weights_only=True)``, which refuses anything that would run code (unlike
pickle), written atomically (:mod:`torchgmm._files`); a model file's format marker and version, and the
one-line reasons an unreadable file gives. Must not: know estimators or fitted models (their plain dicts come
from :mod:`torchgmm.model` and the estimator), nor checkpoints' meaning (:mod:`torchgmm.checkpoint` uses
:func:`write_plain` and :func:`read_plain` for its files).

A model file holds the format version, the library version, the constructor parameters and every fitted
attribute (see :data:`torchgmm.model.FITTED_ATTRIBUTES`).
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchgmm._files import write_atomic
from torchgmm._version import __version__

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFile",
    "save_model",
    "load_model",
    "plain",
    "write_plain",
    "read_plain",
    "kind_of_file",
]

FORMAT = "torchgmm-model"
FORMAT_VERSION = 1


def plain(value: Any) -> Any:
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
        return [plain(v) for v in value]
    return None  # e.g. a NumPy RandomState: not storable as data; the loaded model gets None


def write_plain(path: str | os.PathLike, content: dict[str, Any]) -> None:
    """``torch.save`` plain ``content`` to ``path``, atomically."""
    write_atomic(path, lambda temporary: torch.save(content, temporary))


def read_plain(path: str | os.PathLike) -> Any:
    """What :func:`write_plain` wrote, read with ``torch.load(weights_only=True)`` on the CPU.

    Raises whatever ``torch.load`` raises (``FileNotFoundError``, pickle errors, ``weights_only`` refusals);
    :func:`reason` turns them into one line. torch's own warnings about what it reads (advice to file an issue
    about an odd pickle, say) are not shown: the caller's error says what is wrong with the file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


# torch.save writes a zip archive; any other file cannot be a model or checkpoint. What a file starts with
# tells what it is instead, for the error.
_ZIP = b"PK\x03\x04"
_KINDS = (
    (b"\x93NUMPY", "a NumPy array (.npy)"),
    (b"PAR1", "a Parquet file"),
    (b"\x89PNG", "a PNG image"),
    (b"\x80", "a Python pickle"),
)


def kind_of_file(path: str | os.PathLike) -> str | None:
    """What a file that is not a ``torch.save`` archive looks like (``'a text file'``...), or None if it is one.

    Raises ``OSError`` if it cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(_ZIP):
        return None
    if not head:
        return "an empty file"
    for magic, kind in _KINDS:
        if head.startswith(magic):
            return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file of another kind"
    lines = [line for line in text.splitlines()[1:4] if line.strip()]
    if lines and all(any(sep in line for sep in ",;\t ") and any(c.isdigit() for c in line) for line in lines):
        return "a text file of data (CSV, TSV or similar)"
    return "a text file"


@dataclass(frozen=True)
class ModelFile:
    """The content of a model file.

    Attributes
    ----------
    params : dict
        The estimator's constructor parameters (plain values).
    fitted : dict
        The fitted attributes (plain values; see :meth:`torchgmm.model.FittedMixture.to_plain`).
    outputs : str
        ``'torch'`` or ``'numpy'``: the kind of the saved attributes.
    device : torch.device
        Where tensor outputs go (the saved device, or ``map_location``).
    """

    params: dict[str, Any]
    fitted: dict[str, Any]
    outputs: str
    device: torch.device


def save_model(path: str | os.PathLike, params: dict[str, Any], fitted: dict[str, Any], outputs: Any) -> None:
    """Write a model file: constructor ``params``, ``fitted`` attributes (plain), outputs like ``outputs``."""
    content = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "torchgmm_version": __version__,
        "params": {name: plain(value) for name, value in params.items()},
        "fitted": fitted,
        "outputs": "torch" if isinstance(outputs, torch.Tensor) else "numpy",
        "device": str(outputs.device) if isinstance(outputs, torch.Tensor) else "cpu",
    }
    write_plain(path, content)


def load_model(path: str | os.PathLike, map_location: str | torch.device | None = None) -> ModelFile:
    """Read a model file written by :func:`save_model`.

    Outputs follow what was saved (NumPy arrays, or tensors on the saved
    device); ``map_location`` puts tensors elsewhere (e.g. ``'cpu'`` for a
    model fitted on a GPU).

    Raises
    ------
    ValueError
        If the file is not a torchgmm model file (or holds code rather than data),
        or ``map_location`` is not a device, or the saved device is CUDA and CUDA is not available.
    """
    if map_location is not None:
        try:
            torch.device(map_location)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"Invalid value for 'map_location': {map_location!r}. Use None, 'cpu', 'cuda' or 'cuda:N'."
            ) from None
    kind = kind_of_file(path)  # (raises FileNotFoundError for a missing file)
    if kind is not None:
        raise ValueError(
            f"{path} is not a torchgmm model file: it looks like {kind}. A model file is what "
            "GaussianMixture.save or 'torchgmm fit -o' writes."
        )
    try:
        content = read_plain(path)
    except Exception as exc:  # pickle errors, weights_only refusals (code, not data), truncated files
        raise ValueError(f"{path} is not a readable torchgmm model file ({reason(exc)}).") from None
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
        outputs = content["outputs"]
        device = torch.device(map_location) if map_location is not None else torch.device(content["device"])
        model = ModelFile(dict(content["params"]), dict(content["fitted"]), outputs, device)
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:  # a missing or malformed entry
        raise damaged_model(path, exc) from None
    if outputs == "torch" and device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{path} holds a model on {device}, and CUDA is not available: load it with map_location='cpu'."
        )
    return model


def damaged_model(path: Any, exc: BaseException) -> ValueError:
    """The error for a model file with a missing or malformed entry."""
    return ValueError(f"{path} is a damaged torchgmm model file ({reason(exc)}).")


def reason(exc: BaseException) -> str:
    """``Type: first line`` of why a file could not be read or used, for one-line messages."""
    reason = (str(exc).splitlines() or [""])[0][:80]
    if isinstance(exc, pickle.UnpicklingError):  # torch's text is advice on loading it unsafely
        reason = "not plain tensors and values saved with torch.save"
    return f"{type(exc).__name__}: {reason}"
