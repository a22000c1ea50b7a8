"""Shared fixtures: an isolated cache, small real corpora on disk, one local Ray per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from runtime import ray_cluster

# The Ray these tests start listens on loopback, as the CLI's does (set before Ray loads).
ray_cluster.prepare(address=None)

RATE = 16000


@pytest.fixture(scope="session", autouse=True)
def automl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test run gets its own cache (built-in corpora, features), shared by its tests."""
    path = tmp_path_factory.mktemp("automl-cache")
    os.environ["AUTOML_CACHE"] = str(path)
    return path


def tone(freq: float, seconds: float = 0.5, rate: int = RATE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def write_compare(
    root: Path,
    task: str = "toy",
    per_class: dict[str, int] | None = None,
    partitions: tuple[str, ...] = ("train", "devel", "test"),
    named: dict[str, str] | None = None,
) -> Path:
    """A tiny ComParE-layout corpus: class 'low' is a 300 Hz tone, 'high' a 1200 Hz tone;
    ``named`` writes a class under another label (any text a TSV field can hold)."""
    per_class = per_class or {"low": 4, "high": 4}
    named = named or {}
    freqs = {"low": 300.0, "high": 1200.0, "mid": 700.0}
    (root / "wav").mkdir(parents=True)
    (root / "lab").mkdir()
    lines = ["file_name\tlabel"]
    for part in partitions:
        k = 0
        for label, count in per_class.items():
            for _ in range(count):
                k += 1
                name = f"{part}_{k:03d}.wav"
                sf.write(root / "wav" / name, tone(freqs[label], seed=k), RATE)
                lines.append(f"{name}\t{named.get(label, label)}")
    (root / "lab" / f"{task}.tsv").write_text("\n".join(lines) + "\n")
    return root


#: (case for :func:`break_corpus`, regex the error message must contain)
CORPUS_MISTAKES = [
    ("missing-dir", "data directory not found"),
    ("no-label-file", "no label file"),
    ("wrong-columns", "expected tab-separated columns"),
    ("wrong-delimiter", "comma-separated"),
    ("duplicate", "duplicate file name 'train_001.wav'"),
    ("label-missing-wav", "label for a missing wav: .*train_002.wav"),
    ("wav-without-label", "wav without a label: .*train_999.wav"),
    ("empty-partition", "partition 'devel' .* is empty"),
    ("one-class", "only one class"),
    ("class-absent-from-train", "class 'mid' .* absent from train"),
]


def hidden_target(space, seed: int = 123) -> Callable[[dict], float]:
    """A synthetic reward for searchers: the share of decisions equal to a hidden target
    assignment (additive over decisions; its optimum, the target, scores 1)."""
    rng = np.random.default_rng(seed)
    target = {d.name: d.choices[rng.integers(len(d.choices))] for d in space.decisions}
    return lambda values: float(np.mean([values[k] == target[k] for k in target]))


def told_rewards(searcher, reward: Callable[[dict], float], n: int) -> list[float]:
    """Ask and tell ``n`` children one at a time; their rewards in order."""
    rewards = []
    for _ in range(n):
        proposal = searcher.ask()
        rewards.append(reward(proposal.values))
        searcher.tell(proposal.id, rewards[-1])
    return rewards


def break_corpus(root: Path, case: str) -> None:
    """Make one of the mistakes a user can make in a corpus written by :func:`write_compare`."""
    lab = root / "lab" / "toy.tsv"
    if case == "missing-dir":
        shutil.rmtree(root)
    elif case == "no-label-file":
        lab.unlink()
    elif case == "wrong-columns":
        lab.write_text(lab.read_text().replace("file_name\tlabel", "file\tclass"))
    elif case == "wrong-delimiter":
        lab.write_text(lab.read_text().replace("\t", ","))
    elif case == "duplicate":
        lab.write_text(lab.read_text() + "train_001.wav\tlow\n")
    elif case == "label-missing-wav":
        (root / "wav" / "train_002.wav").unlink()
    elif case == "wav-without-label":
        sf.write(root / "wav" / "train_999.wav", tone(300), RATE)
    elif case == "empty-partition":
        lab.write_text(
            "\n".join(x for x in lab.read_text().splitlines() if not x.startswith("devel_"))
        )
        for wav in root.glob("wav/devel_*"):
            wav.unlink()
    elif case == "unreadable-wav":
        (root / "wav" / "devel_003.wav").write_bytes(b"RIFF not really a wav")
    elif case == "empty-wav":
        sf.write(root / "wav" / "devel_003.wav", tone(300)[:0], RATE)
    elif case == "non-finite-wav":
        samples = tone(300).astype("float32")
        samples[100], samples[200] = np.nan, np.inf
        sf.write(root / "wav" / "devel_003.wav", samples, RATE, subtype="FLOAT")
    elif case == "absurd-samples":  # finite, but no float wav holds them
        samples = tone(300).astype("float32")
        samples[100] = 1e30
        sf.write(root / "wav" / "devel_003.wav", samples, RATE, subtype="FLOAT")
    elif case in ("path-traversal", "absolute-path"):  # a label naming audio outside wav/
        secret = root.parent / "outside_secret.wav"
        sf.write(secret, tone(300), RATE)
        (root / "wav" / "train_d").mkdir()
        name = "train_d/../../../outside_secret.wav" if case == "path-traversal" else str(secret)
        lab.write_text(lab.read_text() + f"{name}\tlow\n")
    elif case == "one-class":
        lab.write_text(lab.read_text().replace("\thigh", "\tlow"))
    elif case == "class-absent-from-train":
        lines = lab.read_text().splitlines()
        lab.write_text("\n".join([*lines[:-1], lines[-1].split("\t")[0] + "\tmid"]) + "\n")
    else:
        raise ValueError(case)


@pytest.fixture(scope="session")
def _ray_stopped_at_exit() -> Iterator[None]:
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def local_ray(_ray_stopped_at_exit: None) -> None:
    """One local Ray for the session (starting it costs seconds), on loopback with 2 CPUs;
    the commands the tests run in this process join it (``ray_session`` reuses a Ray that
    is up and leaves it running). Started by the first test that asks for it (again after
    a test that stopped it, as test_safe_defaults does), stopped when the session ends."""
    import ray  # here, not at the top: Ray must load after ray_cluster.prepare()

    if not ray.is_initialized():
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1"
        )


@pytest.fixture
def compare_corpus(tmp_path: Path) -> Callable[..., Path]:
    def make(**kwargs) -> Path:
        return write_compare(tmp_path / "corpus", **kwargs)

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server_at(folder: Path, *extra: str) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1, stopped when the block ends."""
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
            *("--port", str(port), "--workers", "1"),
            *("--backend-store-uri", f"sqlite:///{folder / 'server.db'}"),
            *("--artifacts-destination", str(folder / "server-artifacts")),
            *extra,
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=1):
                break
        except urllib.error.HTTPError:  # it answers, if not to us
            break
        except OSError:
            time.sleep(0.5)
    try:
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class SmallDisks:
    """Filesystems of a few KB (tmpfs) mounted on folders: disks that fill up under a real
    command. Needs root, as ``make test`` runs; unmounted when the test ends."""

    def __init__(self) -> None:
        self.mounted: list[Path] = []

    def mount(self, folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self._mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)])
        self.mounted.append(folder)
        return folder

    def grow(self, folder: Path, size: str = "64m") -> None:
        """Room made on the disk (what a user does before ``--resume``)."""
        self._mount(["-o", f"remount,size={size}", str(folder)])

    def _mount(self, args: list[str]) -> None:
        done = subprocess.run(["mount", *args], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"mounting a small filesystem needs root: {done.stderr.strip()}")

    def unmount_all(self) -> None:
        for folder in self.mounted:
            subprocess.run(["umount", "--lazy", str(folder)], check=False)


@pytest.fixture
def small_disks() -> Iterator[SmallDisks]:
    disks = SmallDisks()
    yield disks
    disks.unmount_all()
