"""Unweighted average recall (UAR), the ComParE challenge measure.

UAR is the mean of per-class recalls over the classes present in the reference, so a
majority-class guesser scores 1/K whatever the imbalance. Computed with numpy because
it runs after every epoch of every child; the tests hold it equal to scikit-learn's
``recall_score(average="macro", labels=<reference classes>)``.
"""

from __future__ import annotations

import numpy as np


def uar(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes in ``y_true``; a class never predicted has recall 0."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        raise ValueError("UAR of an empty reference is undefined")
    classes, support = np.unique(y_true, return_counts=True)
    hits = np.array([np.sum((y_true == c) & (y_pred == c)) for c in classes])
    return float(np.mean(hits / support))
