"""What each plot must show, read off the figures (axes, labels, legend, data order)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PathCollection

from automl.report import compare
from automl.report.evaluate import confusion_figure


def _search() -> compare.SearchRuns:
    rows = [  # trial, dev UAR, parameters, end time: trial 3 ends first
        (0, 0.40, 900_000, 4000), (1, 0.55, 30_000, 3000), (2, 0.62, 250_000, 2000),
        (3, 0.58, 60_000, 1000), (4, 0.50, 400_000, 5000),
    ]  # fmt: skip
    children = [
        {"trial": t, "dev_uar": u, "n_params": n, "end_time": e, "status": "FINISHED",
         "latency_ms": 1.0, "run_id": f"{t:032d}"}
        for t, u, n, e in rows
    ]  # fmt: skip
    return compare.SearchRuns("a" * 32, "random", children)


@pytest.fixture(autouse=True)
def _agg_and_closed():
    plt.switch_backend("Agg")  # files only, as the commands draw
    yield
    plt.close("all")


def test_best_so_far_is_drawn_in_the_order_children_ended():
    figure = compare._best_so_far(plt, [_search()])
    axes = figure.axes[0]
    (line,) = axes.get_lines()
    assert list(line.get_ydata()) == [0.58, 0.62, 0.62, 0.62, 0.62]  # trial 3, 2, 1, 0, 4
    assert list(line.get_xdata()) == [1, 2, 3, 4, 5]
    assert axes.get_xlabel().startswith("children ended")
    figure.canvas.draw()
    assert all(t.get_text().isdigit() for t in axes.get_xticklabels() if t.get_text())


def test_uar_vs_params_reads_on_a_log_axis_and_names_the_front():
    figure = compare._uar_vs_params(plt, [_search()])
    axes = figure.axes[0]
    figure.canvas.draw()
    ticks = [t.get_text() for t in axes.get_xticklabels() if t.get_text()]
    assert len(ticks) >= 4 and any(t.endswith("k") for t in ticks), ticks  # 50k, 100k, ...
    shown = axes.get_legend()
    legend = dict(zip((t.get_text() for t in shown.get_texts()), shown.legend_handles, strict=True))
    assert isinstance(legend["Pareto front"], PathCollection)  # a circled point, not a line
    front = {t.get_text() for t in axes.texts}
    assert front == {"#1", "#3", "#2"}  # 30k: .55, 60k: .58, 250k: .62


def test_confusion_rows_are_recalls_on_a_colour_bar_with_counts():
    counts = np.array([[8, 2], [1, 9]])
    figure = confusion_figure(plt, counts, ["calm", "tired"], "test")
    axes, bar = figure.axes  # the matrix and its colour bar
    assert bar.get_ylim() == (0.0, 1.0)
    texts = sorted(t.get_text() for t in axes.texts)
    assert texts == ["0.10\n(1)", "0.20\n(2)", "0.80\n(8)", "0.90\n(9)"]
    assert axes.get_ylabel().startswith("true class")
