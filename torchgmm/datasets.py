"""Small real data sets shipped inside the package.

Owns: reading the data files shipped with torchgmm (the iris measurements). Must not: fit, or read anything
outside the package.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["load_iris"]


def load_iris() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Fisher's iris measurements (150 flowers, 4 features in cm, 3 species).

    Returns
    -------
    X : ndarray of shape (150, 4), float64
        Sepal length, sepal width, petal length, petal width.
    species : ndarray of shape (150,), int64
        0 setosa, 1 versicolor, 2 virginica.
    feature_names : list of str
    """
    with resources.files("torchgmm").joinpath("iris.csv").open("r") as f:
        header = f.readline().strip().split(",")
        rows = [line.strip().split(",") for line in f if line.strip()]
    names = ["setosa", "versicolor", "virginica"]
    X = np.array([[float(v) for v in row[:4]] for row in rows])
    species = np.array([names.index(row[4]) for row in rows], dtype=np.int64)
    return X, species, header[:4]
