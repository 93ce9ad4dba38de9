"""Data sources served to the EM passes as chunks of rows on the device.

Every pass over the data (E-step, initialisation, scoring) asks its source for
chunks of at most ``rows`` rows, already on the compute device, in the compute
dtype and centred on a fixed ``shift`` (the data mean), so that float32
arithmetic on data with a large offset keeps its precision.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["InMemoryData"]


class InMemoryData:
    """Rows of one tensor ``X [N, D]`` that lives on the compute device.

    Parameters
    ----------
    X : Tensor of shape (N, D)
        The data, any numeric dtype, already on ``device``.
    dtype : torch.dtype
        The floating dtype computations run in; chunks are cast to it.
    """

    def __init__(self, X: Tensor, dtype: torch.dtype) -> None:
        self.X = X
        self.dtype = dtype
        # Subtract the shift in the wider of the input and compute dtypes, so that
        # float64 data with a large offset keep their digits when computed in float32.
        self._work_dtype = torch.promote_types(X.dtype, dtype) if X.is_floating_point() else dtype
        self.shift = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def device(self) -> torch.device:
        return self.X.device

    def centre(self) -> Tensor:
        """Centre later chunks on the data mean (accumulated in float64); returns it in float64."""
        total = torch.zeros(self.n_features, dtype=torch.float64, device=self.device)
        for start in range(0, self.n_samples, 1 << 16):
            total += self.X[start : start + (1 << 16)].to(torch.float64).sum(0)
        self.shift = total / self.n_samples
        return self.shift

    def _centred(self, rows: Tensor) -> Tensor:
        return (rows.to(self._work_dtype) - self.shift.to(self._work_dtype)).to(self.dtype)

    def chunks(self, rows: int) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(start, x)`` with ``x [n, D]`` the centred rows ``start:start + n``."""
        for start in range(0, self.n_samples, rows):
            yield start, self._centred(self.X[start : start + rows])

    def take(self, indices: Tensor) -> Tensor:
        """Centred rows at ``indices`` (any shape ``[...]``), as ``[..., D]``."""
        return self._centred(self.X[indices.reshape(-1)]).reshape(*indices.shape, -1)
