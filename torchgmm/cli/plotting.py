"""The drawing of ``torchgmm plot``: a fitted mixture over its data, and its lower bound per iteration.

Owns: matplotlib (an optional extra, imported here only, when a plot is drawn, with the Agg backend), the
projection of the data and the components onto two axes, the look of the figure (1σ and 2σ ellipses in black
with a white outline, which stay visible on the points of any colour, dense or not, and on the white
background; whole iterations on the lower-bound axis), and writing the figure as a PNG through
:func:`torchgmm._files.write_atomic`. Must not: read data or model files, check options, fit anything or print;
the ``plot`` command in :mod:`torchgmm.cli.commands` does those.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from torchgmm._files import write_atomic
from torchgmm.cli.errors import UsageError
from torchgmm.estimator import GaussianMixture

__all__ = ["ELLIPSE_COLOUR", "ELLIPSE_OUTLINE", "draw", "require_matplotlib", "write_plot"]

# The ellipses: black lines in a white outline, visible on points of every colour (a line in its component's
# colour vanishes into that component's own points, where they are dense) and on the white background.
ELLIPSE_COLOUR = "black"
ELLIPSE_OUTLINE = "white"


def _matplotlib() -> Any:
    """``matplotlib`` on the Agg backend, with ``pyplot``, ``patches``, ``patheffects`` and ``ticker`` loaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.patches
        import matplotlib.patheffects
        import matplotlib.pyplot
        import matplotlib.ticker
    except ImportError:
        raise UsageError("plot needs matplotlib: pip install matplotlib") from None
    return matplotlib


def require_matplotlib() -> None:
    """Fail with one line, before any other check, when matplotlib is not installed."""
    _matplotlib()


def _project(X: np.ndarray, means: np.ndarray, covs: np.ndarray):
    """``(points, means, covariances, axis names)`` on two axes: the features, or two principal components."""
    K, D = means.shape
    if D > 2:  # the first two principal components of the data
        centre = X.mean(0)
        _, _, vt = np.linalg.svd(X[:: max(1, len(X) // 100_000)] - centre, full_matrices=False)
        W = vt[:2].T
        axes_names = ("principal component 1", "principal component 2")
        return (X - centre) @ W, (means - centre) @ W, W.T @ covs @ W, axes_names
    if D == 2:
        return X, means, covs, ("feature 1", "feature 2")
    points = np.column_stack([X[:, 0], np.zeros(len(X))])
    means2 = np.column_stack([means[:, 0], np.zeros(K)])
    covs2 = np.zeros((K, 2, 2))
    covs2[:, 0, 0] = covs[:, 0, 0]
    covs2[:, 1, 1] = 1e-12
    return points, means2, covs2, ("feature 1", "")


def draw(gm: GaussianMixture, X: np.ndarray, source: str) -> Any:
    """The figure of ``gm`` on the rows ``X`` (float64, as many columns as the model): clusters, lower bounds."""
    mpl = _matplotlib()
    plt, Ellipse = mpl.pyplot, mpl.patches.Ellipse
    labels = np.asarray(gm.predict(X))
    means = np.asarray(gm.means_, dtype=np.float64)
    K = means.shape[0]
    scale_tril = gm.to_module().scale_tril().to(torch.float64)
    covs = (scale_tril @ scale_tril.mT).numpy()  # every type as dense (K, D, D)
    points, means2, covs2, axes_names = _project(X, means, covs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    shown = np.random.default_rng(0).permutation(len(points))[:50_000]
    # vmin/vmax pin label k to the k-th tab10 colour
    left.scatter(points[shown, 0], points[shown, 1], c=labels[shown] % 10, s=4, cmap="tab10", vmin=-0.5, vmax=9.5)
    for k in range(K):
        values, vectors = np.linalg.eigh(covs2[k])
        angle = math.degrees(math.atan2(vectors[1, -1], vectors[0, -1]))
        for scale, style in ((1.0, "-"), (2.0, "--")):
            width, height = 2 * scale * np.sqrt(np.maximum(values[::-1], 0))
            lw = 1.5 / scale
            outline = mpl.patheffects.withStroke(linewidth=lw + 2, foreground=ELLIPSE_OUTLINE)
            left.add_patch(
                Ellipse(
                    means2[k],
                    width,
                    height,
                    angle=angle,
                    fill=False,
                    edgecolor=ELLIPSE_COLOUR,
                    lw=lw,
                    linestyle=style,
                    path_effects=[outline],
                )
            )
    left.scatter(means2[:, 0], means2[:, 1], marker="x", c=ELLIPSE_COLOUR, s=40)
    left.set(title=f"{source}: K={K}, {gm.covariance_type}", xlabel=axes_names[0], ylabel=axes_names[1])
    histories = getattr(gm, "init_lower_bounds_history_", [gm.lower_bounds_])
    best = int(np.argmax(gm.init_lower_bounds_)) if len(gm.init_lower_bounds_) == len(histories) else 0
    for r, history in enumerate(histories):
        if history:
            right.plot(range(1, len(history) + 1), history, lw=2.5 if r == best else 1, label=f"restart {r}")
    right.set(title="lower bound per iteration", xlabel="iteration", ylabel="mean log-likelihood per row")
    right.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    right.legend(fontsize="small")
    fig.tight_layout()
    return fig


def write_plot(path: str, gm: GaussianMixture, X: np.ndarray, source: str, dpi: int) -> None:
    """Draw ``gm`` on the rows ``X`` (float64, as many columns as the model) and write the PNG to ``path``."""
    fig = draw(gm, X, source)
    try:
        write_atomic(path, lambda name: fig.savefig(name, format="png", dpi=dpi))
    finally:
        _matplotlib().pyplot.close(fig)
