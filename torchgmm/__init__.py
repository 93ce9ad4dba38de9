"""torchgmm: Gaussian mixture models fitted by batched EM on CPU or CUDA with PyTorch."""

from torchgmm.estimator import GaussianMixture
from torchgmm.exceptions import (
    ConvergenceWarning,
    DegenerateComponentWarning,
    FailedRestartWarning,
    NotFittedError,
    OutOfMemoryError,
    OutOfMemoryWarning,
)
from torchgmm.module import GaussianMixtureModule
from torchgmm.repair import Repair

__all__ = [
    "GaussianMixture",
    "GaussianMixtureModule",
    "Repair",
    "ConvergenceWarning",
    "DegenerateComponentWarning",
    "FailedRestartWarning",
    "NotFittedError",
    "OutOfMemoryError",
    "OutOfMemoryWarning",
    "__version__",
]

__version__ = "0.1.0"
