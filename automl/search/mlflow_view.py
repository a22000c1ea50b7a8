"""A search as MLflow's UI shows it: a runs-page view of its children, best first, with
their dev UAR and architecture as columns, and the parent run's description linking to
that view and to the best child (one click from the parent)."""

from __future__ import annotations

from runtime import mlflow_ui, tracking
from runtime.tags import ARCH_SHORT_TAG, PARENT_TAG

COLUMNS = (
    "metrics.`dev_uar`",
    "metrics.`dev_uar_mean`",  # a leader's, over the seeds it was confirmed on
    f"tags.`{ARCH_SHORT_TAG}`",
    "metrics.`n_params`",
    "metrics.`latency_ms`",
    "metrics.`best_epoch`",
    "attributes.`Models`",
)


def children_view(parent: tracking.ParentRun) -> mlflow_ui.RunsView:
    """The children of ``parent`` by dev UAR, best first."""
    return mlflow_ui.RunsView(
        key=f"search-{parent.parent_run_id}",
        filter=f"tags.`{PARENT_TAG}` = '{parent.parent_run_id}'",
        order_by="metrics.`dev_uar`",
        columns=COLUMNS,
    )


def publish(parent: tracking.ParentRun) -> str:
    """Save the children's view on the experiment; its page in the UI."""
    return mlflow_ui.save_view(parent.uri, parent.experiment_id, children_view(parent))


def parent_note(
    parent: tracking.ParentRun, best: tuple[str, str, float] | None, seeds: int = 1
) -> str:
    """The parent run's description (Markdown): its children's view and, once one finished,
    its best child (``best``: run id, run name, dev UAR; its mean over ``seeds`` seeds when
    it was confirmed on more than one)."""
    view = mlflow_ui.runs_page(parent.experiment_id, children_view(parent).key)
    lines = [f"[This search's children, best dev UAR first]({view})"]
    if best is not None:
        run_id, name, dev_uar = best
        page = mlflow_ui.run_page(parent.experiment_id, run_id)
        over = f" (mean of {seeds} seeds)" if seeds > 1 else ""
        lines.insert(0, f"Best child: [{name}]({page}), dev UAR {dev_uar:.4f}{over}")
    return "\n\n".join(lines)
