"""scikit-learn's parameter protocol for torchgmm's estimators, without importing scikit-learn.

Owns ``get_params``, ``set_params`` (with scikit-learn's message for an unknown name) and the ``repr`` that
shows the parameters that differ from their defaults, all read from the signature of ``__init__``. Must not:
validate values, fit, or know any estimator.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from torch import Tensor


class Parameters:
    """Mixin: the constructor's arguments, stored under their own names, are the estimator's parameters."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn's ``get_params``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any):
        """Set constructor parameters, as scikit-learn's ``set_params``; returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}(). "
                    f"Valid parameters are: {valid!r}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        changed = []
        for name in self._param_names():
            value, default = getattr(self, name), defaults[name].default
            same = value is default
            if not same and not isinstance(value, (np.ndarray, Tensor)):
                try:
                    same = bool(value == default)
                except Exception:
                    same = False
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"
