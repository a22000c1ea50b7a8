"""8 CartPole-v1 DQN seeds: as populations against single-seed runs and stable-baselines3.

Side by side in one run, on this machine's two cores, the same rl-zoo hyperparameters
(``DQNConfig`` defaults; SB3 gets exactly the same, as in ``rl_vs_sb3.py``), the same
evaluation for all (10 greedy episodes every 5k steps, this project's seeds):

- one population of 8 seeds in one process (2 torch threads), with our default algorithm
  (double DQN + dueling heads) and with SB3's (vanilla DQN: the double target's extra
  forward of the online network is compute SB3 does not do);
- two populations of 4, two processes at a time (1 thread each);
- 8 single-seed runs of ours, two processes at a time (1 thread each);
- 8 single-seed runs of stable-baselines3, two at a time (1 thread each).

Aggregate env steps/s = 8 x steps / wall seconds of the whole variant (evaluation
included, the same for all). For ours, every seed's returned policy is scored on fresh
episodes (solved: >= 475). Needs the benchmark-only extra: pip install -e '.[bench]'.

Then the time split of one population of 8 (one more run, in this process, 2 threads):
where its seconds go, per 1,000 aggregate env steps, measured by wrapping the pieces
(environment steps, replay: adding, sampling, stacking; acting; the target network's
forward, computed ahead for several steps; the gradient step's forward and backward, its
per-member clipping, Adam; evaluation; the rest is the loop's own Python).

    python benchmarks/rl_population.py [--steps 50000] [--seeds 8] [--split-only]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SOLVED = 475.0


def ours_single(seed: int, steps: int) -> list[dict[str, Any]]:
    from rl.dqn import DQNConfig, train

    result = train(DQNConfig(seed=seed, total_steps=steps, threads=1))
    return [{"seed": seed, "returned_fresh": result.returned_fresh_return}]


def ours_population(
    seeds: list[int], steps: int, threads: int, **variant: Any
) -> list[dict[str, Any]]:
    from rl.dqn import DQNConfig, train_population

    config = DQNConfig(total_steps=steps, threads=threads, **variant)
    results = train_population(config, seeds)
    pairs = zip(seeds, results, strict=True)
    return [{"seed": s, "returned_fresh": r.returned_fresh_return} for s, r in pairs]


def vanilla_population(seeds: list[int], steps: int, threads: int) -> list[dict[str, Any]]:
    return ours_population(seeds, steps, threads, double=False, dueling=False)


def sb3_single(seed: int, steps: int) -> list[dict[str, Any]]:
    from rl_vs_sb3 import run_sb3

    result = run_sb3(seed, steps)
    return [{"seed": seed, "best_eval": result["best_eval"]}]


def time_split(seeds: list[int], steps: int) -> dict[str, float]:
    """Seconds per 1,000 aggregate env steps of one population, by piece of the loop."""
    import torch

    from rl import buffers, dqn

    clock: dict[str, float] = defaultdict(float)

    def timed(name: str, function: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                clock[name] += time.perf_counter() - started

        return wrapper

    make_envs, greedy = dqn.make_envs, dqn.QNetwork.greedy_numpy

    def timed_envs(*args: Any) -> Any:
        envs = make_envs(*args)
        envs.step = timed("environment", envs.step)
        return envs

    evaluating = [False]

    def timed_greedy(self: Any) -> Callable:
        act, rollout = greedy(self), timed("acting", greedy(self))
        return lambda obs: act(obs) if evaluating[0] else rollout(obs)

    def timed_evaluate(*args: Any, **kwargs: Any) -> Any:
        evaluating[0] = True  # its acting is counted as evaluation
        try:
            return evaluate(*args, **kwargs)
        finally:
            evaluating[0] = False

    phase = dqn.phase

    def timed_phase(*args: Any, **kwargs: Any) -> Iterator[Any]:
        """The phase's own seconds, less its replay's: the target network's forward."""
        batches = phase(*args, **kwargs)
        while True:
            started, replay = time.perf_counter(), clock["replay"]
            item = next(batches, None)
            clock["target forward"] += time.perf_counter() - started - clock["replay"] + replay
            if item is None:
                return
            yield item

    dqn.make_envs, dqn.QNetwork.greedy_numpy = timed_envs, timed_greedy
    dqn.phase = timed_phase
    evaluate = dqn.evaluate
    dqn.evaluate = timed("evaluation", timed_evaluate)
    dqn.gradient_step = timed("gradient step", dqn.gradient_step)
    dqn.clip_per_member = timed("clipping", dqn.clip_per_member)
    dqn.stack = timed("replay", dqn.stack)
    torch.optim.Adam.step = timed("optimizer", torch.optim.Adam.step)
    for name in ("add", "sample"):
        setattr(buffers.ReplayBuffer, name, timed("replay", getattr(buffers.ReplayBuffer, name)))
    started = time.perf_counter()
    dqn.train_population(dqn.DQNConfig(total_steps=steps, threads=2), seeds)
    total = time.perf_counter() - started
    clock["forward and backward"] = (
        clock.pop("gradient step") - clock["clipping"] - clock["optimizer"]
    )
    clock["loop (Python)"] = total - sum(clock.values())
    per = 1000 / (len(seeds) * steps)
    return {"total": total * per, **{name: s * per for name, s in clock.items()}}


def _call(job: tuple[Callable[..., list[dict]], tuple]) -> list[dict[str, Any]]:
    function, args = job
    return function(*args)


def run_variant(jobs: list[tuple[Callable, tuple]], processes: int) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        rows = [row for part in pool.map(_call, jobs, chunksize=1) for row in part]
    return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rl_population.json"))
    parser.add_argument("--split-only", action="store_true", help="only the time split")
    args = parser.parse_args()
    seeds, steps, half = list(range(args.seeds)), args.steps, args.seeds // 2
    variants = {
        f"ours, one population of {len(seeds)} (1 process, 2 threads)":
            ([(ours_population, (seeds, steps, 2))], 1),
        f"ours, one population of {len(seeds)}, vanilla DQN (as SB3)":
            ([(vanilla_population, (seeds, steps, 2))], 1),
        f"ours, two populations of {half}, two at a time":
            ([(ours_population, (seeds[:half], steps, 1)),
              (ours_population, (seeds[half:], steps, 1))], 2),
        "ours, single-seed runs, two at a time": ([(ours_single, (s, steps)) for s in seeds], 2),
        "stable-baselines3, single-seed runs, two at a time":
            ([(sb3_single, (s, steps)) for s in seeds], 2),
    }  # fmt: skip
    table = []
    for name, (jobs, processes) in ({} if args.split_only else variants).items():
        seconds, rows = run_variant(jobs, processes)
        solved = [r for r in rows if r.get("returned_fresh", 0) >= SOLVED]
        table.append({"variant": name, "wall_seconds": seconds,
                      "aggregate_steps_per_second": len(seeds) * steps / seconds,
                      "returned_solved": len(solved) if "returned_fresh" in rows[0] else None,
                      "seeds": rows})  # fmt: skip
        print(f"{name}: {seconds:.0f} s, {table[-1]['aggregate_steps_per_second']:.0f} steps/s",
              flush=True)  # fmt: skip
    sb3 = table[-1]["aggregate_steps_per_second"] if table else float("nan")
    print(f"\n{'variant':58} {'steps/s':>8} {'vs SB3':>7} {'returned policy solves':>22}")
    for row in table:
        row["vs_sb3"] = row["aggregate_steps_per_second"] / sb3
        solved = "" if row["returned_solved"] is None else f"{row['returned_solved']}/{len(seeds)}"
        print(f"{row['variant']:58} {row['aggregate_steps_per_second']:8.0f} "
              f"{row['vs_sb3']:6.2f}x {solved:>22}")  # fmt: skip
    split = time_split(seeds, steps)
    print(f"\ntime split of one population of {len(seeds)}, ms per 1,000 aggregate env steps:")
    for name, ms in sorted(split.items(), key=lambda item: -item[1]):
        print(f"  {name:24} {1000 * ms:8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "rl_population", "env": "CartPole-v1", "steps": steps,
               "command": f"python benchmarks/rl_population.py --steps {steps} --seeds "
                          f"{args.seeds}", "rows": table,
               "split_seconds_per_1000_steps": split}  # fmt: skip
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
