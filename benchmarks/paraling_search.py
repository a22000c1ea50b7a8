"""Does a search beat the challenge baseline on paralinguistic corpora? Per corpus, through
the real commands: ``automl baseline`` (ComParE_2016 and eGeMAPS functionals + linear SVM),
one plain 2 x 128 tanh GRU, and a time-budgeted search with ASHA, each followed by
``automl evaluate`` of its best child on test.

Prints, per corpus: baseline / plain GRU / search (children trained, failed, at chance after
their first rung; best dev UAR; test UAR), wall times; writes JSON.

    python benchmarks/paraling_search.py --corpus synth-cry-long --corpus synth-cry
    python benchmarks/paraling_search.py --corpus compare:/data/ComParE2018_Crying --task Crying

``--code DIR`` runs another checkout's commands (``PYTHONPATH=DIR``; its tables are the
"before" of a change); ``--parts plain,search`` leaves the baseline out (a checkout without
it, or two checkouts' searches side by side after one baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.tags import PARENT_TAG

CHANCE_MARGIN = 0.05  # a child whose dev UAR stays below 1/K + this is "at chance"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", action="append", default=[], help="built-in or compare:DIR")
    parser.add_argument("--task", default=None, help="the task of a compare:DIR corpus")
    parser.add_argument("--minutes", type=float, default=15.0, help="the search's time budget")
    parser.add_argument("--space", default="seed_gru")
    parser.add_argument("--searcher", default="reinforce")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="automl evaluate's seeds")
    parser.add_argument("--code", type=Path, default=None, help="run this checkout's commands")
    parser.add_argument(
        "--parts",
        default="baseline,plain,search",
        help="which of baseline, plain, search to run (comma-separated)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/paraling_search.json"))
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="paraling-"))
    rows = [run_corpus(args, corpus, work) for corpus in args.corpus or ["synth-cry-long"]]
    for row in rows:
        print_row(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items() if k != "out"}
    args.out.write_text(json.dumps({"benchmark": "paraling_search", "settings": settings,
                                    "corpora": rows}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


def run_corpus(args: argparse.Namespace, corpus: str, work: Path) -> dict:
    data, task = resolve(corpus, args.task)
    folder = work / corpus.replace(":", "_").replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    common = ["--data", data, *(["--task", task] if task else []), "--tracking-uri", uri]
    from automl.data.prepare import load_dataset

    n_classes = load_dataset(data, task=task).n_classes
    row: dict = {"corpus": corpus, "code": str(args.code or "this checkout")}
    parts = args.parts.split(",")
    if "baseline" in parts:
        for features in ("compare", "egemaps"):
            out = folder / f"baseline-{features}.json"
            seconds = automl(args, ["baseline", *common, "--features", features,
                                    "--experiment", "baseline", "--out", str(folder / features),
                                    "--json", str(out)])  # fmt: skip
            result = json.loads(out.read_text())
            row[f"baseline_{features}"] = {
                "devel_uar": result["devel_uar_best"], "complexity": result["complexity"],
                "test_uar": result["test_uar"], "seconds": seconds,
            }  # fmt: skip
    plain_space = Path(__file__).parent / "spaces" / "plain_gru.yaml"
    if "plain" in parts:
        row["plain_gru"] = search_and_evaluate(
            args, common, folder, n_classes, "plain",
            ["--space", str(plain_space), "--trials", "1", "--epochs", "10", "--workers", "1"],
        )  # fmt: skip
    if "search" in parts:
        row["search"] = search_and_evaluate(
            args, common, folder, n_classes, "search",
            ["--space", args.space, "--searcher", args.searcher, "--trials", "1000",
             "--epochs", str(args.epochs), "--workers", str(args.workers),
             "--time-budget", f"{args.minutes}m", "--early-stop", "asha"],
        )  # fmt: skip
    return row


def resolve(corpus: str, task: str | None) -> tuple[str, str | None]:
    """A built-in corpus by its folder (``compare:DIR``), so an older checkout reads it too."""
    if corpus.startswith("compare:"):
        return corpus, task
    from automl.data import synth

    return f"compare:{synth.ensure_corpus(spec=synth.CORPORA[corpus])}", corpus


def search_and_evaluate(
    args: argparse.Namespace,
    common: list[str],
    folder: Path,
    n_classes: int,
    name: str,
    options: list[str],
) -> dict:
    summary_path, evaluation_path = folder / f"{name}.json", folder / f"{name}-evaluate.json"
    search_seconds = automl(args, ["search", *common, *options, "--experiment", name,
                                   "--storage", str(folder / "runs"), "--seed", "0",
                                   "--json", str(summary_path)])  # fmt: skip
    summary = json.loads(summary_path.read_text())
    evaluation: dict = {"test_uar_mean": None, "test_uar_std": None}
    evaluate_seconds = None
    if summary["best"]:  # a search that finished no child has nothing to evaluate
        uri = common[common.index("--tracking-uri") + 1]
        evaluate_seconds = automl(args, ["evaluate", "--best", name, "--seeds", str(args.seeds),
                                         "--tracking-uri", uri,
                                         "--out", str(folder / f"{name}-evaluation"),
                                         "--json", str(evaluation_path)])  # fmt: skip
        evaluation = json.loads(evaluation_path.read_text())
    return {
        **children_counts(summary, n_classes),
        "best_dev_uar": summary["best"]["dev_uar"] if summary["best"] else None,
        # the space's start children (the model one would build by hand), trained to the end
        "start_dev_uar": [t["dev_uar"] for t in summary["trials"] if t.get("start")],
        # over its seeds, when the search confirmed its leaders (an older checkout did not)
        "best_dev_uar_mean": (summary["best"] or {}).get("dev_uar_mean"),
        "best": summary["best"]["architecture"] if summary["best"] else None,
        "test_uar": evaluation["test_uar_mean"],
        "test_uar_std": evaluation["test_uar_std"],
        "search_seconds": search_seconds,
        "evaluate_seconds": evaluate_seconds,
    }


def children_counts(summary: dict, n_classes: int) -> dict:
    """Children trained, failed, with NaN, and at chance when their first rung came (their
    best dev UAR in the epochs every child trains before ASHA may stop it)."""
    from mlflow import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    chance = 1 / n_classes + CHANCE_MARGIN
    grace = max(1, summary["epochs"] // 4) if summary.get("epochs") else 1
    trials = [  # the searcher's children: not duplicates, not a leader's second seed
        t for t in summary["trials"] if t.get("duplicate_of") is None and t.get("confirms") is None
    ]
    failed = [t for t in trials if t["status"] == "failed"]
    at_chance = 0
    runs = client.search_runs([summary["experiment_id"]],
                              f"tags.`{PARENT_TAG}` = '{summary['parent_run_id']}'")  # fmt: skip
    for run in runs:
        if run.data.tags.get("automl.role") != "child":
            continue
        history = client.get_metric_history(run.info.run_id, "epoch_dev_uar")
        early = [m.value for m in history if m.step <= grace]
        if early and max(early) < chance:
            at_chance += 1
    return {
        "children": len(trials),
        "failed": len(failed),
        "nan": sum("nan" in (t.get("error") or "") for t in failed),
        "retried": sum(bool(t.get("note")) for t in trials),
        "at_chance_first_rung": at_chance,
        "children_per_hour": len(trials) / max(summary["wall_seconds"], 1) * 3600,
        "confirmed": summary.get("confirmed", []),
    }


def automl(args: argparse.Namespace, argv: list[str]) -> float:
    """Run one ``automl`` command (of ``--code``'s checkout if given); its wall seconds."""
    env = dict(os.environ)
    if args.code:
        env["PYTHONPATH"] = str(args.code.resolve())
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "automl.cli", *argv], check=True, env=env,
                   cwd=args.code or None, stdout=subprocess.DEVNULL)  # fmt: skip
    return round(time.perf_counter() - start, 1)


def print_row(row: dict) -> None:
    print(f"\n{row['corpus']} ({row['code']})")
    for features in ("compare", "egemaps"):
        if (b := row.get(f"baseline_{features}")) is not None:
            test = "-" if b["test_uar"] is None else f"{b['test_uar']:.3f}"
            print(f"  baseline {features:8} devel {b['devel_uar']:.3f}  test {test}"
                  f"  (C={b['complexity']:g}, {b['seconds']:.0f} s)")  # fmt: skip
    for name in ("plain_gru", "search"):
        if (r := row.get(name)) is None:
            continue
        dev = "-" if r["best_dev_uar"] is None else f"{r['best_dev_uar']:.3f}"
        test = "-" if r["test_uar"] is None else f"{r['test_uar']:.3f} +- {r['test_uar_std']:.3f}"
        start = "".join(
            f" (start child {u:.3f})" for u in r.get("start_dev_uar") or [] if u is not None
        )
        print(f"  {name:17} children {r['children']:3} failed {r['failed']} (NaN {r['nan']}) "
              f"retried {r['retried']} at chance {r['at_chance_first_rung']}  "
              f"best dev {dev}{start}  "
              f"test {test}  ({r['search_seconds']:.0f} s + {r['evaluate_seconds'] or 0:.0f} s "
              f"evaluate, {r['children_per_hour']:.0f}/h)")  # fmt: skip


if __name__ == "__main__":
    main()
