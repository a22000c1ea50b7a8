"""`synth-cry` and `synth-cry-long`: deterministic, generated infant-vocalisation corpora in the
ComParE layout (utterances of 1-2.5 s, and of 2-5 s as ComParE's speaker-state corpora have).

Why generate rather than ship: nothing may be downloaded at run time, and a corpus that
looks like the Crying sub-challenge (three mood classes, about 70/20/10, speaker-disjoint
partitions) lets the whole pipeline run on a laptop. Each utterance comes from a
source-filter model: a glottal pulse train following a pitch contour, aspiration noise,
three formant resonators scaled by the infant's vocal-tract length, a loudness envelope
over voiced segments, and background noise. Class and speaker distributions overlap
on purpose, so the task is not solved by a linear model on MFCC statistics.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

from runtime.errors import UserError

SAMPLE_RATE = 16000
CLASSES = ("neutral", "fussing", "crying")


@dataclass(frozen=True)
class CorpusSpec:
    """What a generated corpus is made of; its name and version name its folder."""

    name: str
    version: int
    priors: tuple[float, float, float]  # of CLASSES
    speakers: tuple[tuple[str, int], ...]  # speakers per partition
    utterances_per_speaker: int
    seconds: tuple[float, float]  # utterance duration range


#: the Crying-like default: utterances of 1-2.5 s, 70/20/10
SYNTH_CRY = CorpusSpec(
    "synth-cry", 1, (0.7, 0.2, 0.1), (("train", 24), ("devel", 12), ("test", 12)), 12, (1.0, 2.5)
)
#: speaker states at the length ComParE corpora have: utterances of 2-5 s, 50/30/20
SYNTH_CRY_LONG = CorpusSpec(
    "synth-cry-long",
    1,
    (0.5, 0.3, 0.2),
    (("train", 30), ("devel", 12), ("test", 12)),
    15,
    (2.0, 5.0),
)
CORPORA = {spec.name: spec for spec in (SYNTH_CRY, SYNTH_CRY_LONG)}


@dataclass(frozen=True)
class _Speaker:
    f0: float  # resting pitch in Hz
    tract: float  # formant scale: shorter vocal tract, higher formants
    tilt: float  # low-pass cutoff of the recording channel in Hz
    snr_db: float  # background noise level


@dataclass(frozen=True)
class _Mood:
    pitch: tuple[float, float]  # multiplier range on the speaker's f0
    arc: tuple[float, float]  # depth of the rise-fall pitch arc
    segment_s: tuple[float, float]  # voiced segment duration
    pause_s: tuple[float, float]  # pause between segments
    breath: tuple[float, float]  # aspiration-noise share
    jitter: tuple[float, float]  # cycle-to-cycle pitch perturbation


MOODS = {
    "neutral": _Mood(
        (0.85, 1.20), (0.0, 0.25), (0.15, 0.60), (0.10, 0.60), (0.15, 0.60), (0.0, 0.03)
    ),
    "fussing": _Mood(
        (0.95, 1.30), (0.05, 0.35), (0.20, 0.80), (0.08, 0.45), (0.10, 0.50), (0.01, 0.05)
    ),
    "crying": _Mood(
        (1.05, 1.45), (0.15, 0.45), (0.35, 1.20), (0.05, 0.35), (0.05, 0.40), (0.02, 0.07)
    ),
}


def default_root() -> Path:
    """Where built-in corpora and feature caches live: $AUTOML_CACHE or ~/.cache/automl."""
    return Path(os.environ.get("AUTOML_CACHE") or Path.home() / ".cache" / "automl")


def check_cache_root() -> Path:
    """The cache folder, made if need be; a file or a read-only place there is a user error
    found now, not after the features were extracted (hours on a real corpus)."""
    root = default_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"AUTOML_CACHE {root}: cannot make the cache folder ({exc})") from None
    if not os.access(root, os.W_OK):
        raise UserError(f"AUTOML_CACHE {root}: not writable")
    return root


def ensure_corpus(root: Path | None = None, spec: CorpusSpec = SYNTH_CRY) -> Path:
    """Write the corpus once (atomically, so concurrent processes never see half of it)."""
    target = (root or default_root() / "corpora") / f"{spec.name}-v{spec.version}"
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
    try:
        write_corpus(tmp, spec)
        (tmp / ".complete").write_text("ok\n")
        os.replace(tmp, target)
    except OSError:
        if not (target / ".complete").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_corpus(root: Path, spec: CorpusSpec = SYNTH_CRY, seed: int = 2018) -> None:
    """Generate every utterance and both label files under ``root``."""
    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True)
    (root / "lab").mkdir()
    public, confidential = ["file_name\tlabel"], ["file_name\tlabel"]
    for part, n_speakers in spec.speakers:
        labels = _partition_labels(rng, n_speakers * spec.utterances_per_speaker, spec.priors)
        index = 0
        for _ in range(n_speakers):
            speaker = _sample_speaker(rng)
            for _ in range(spec.utterances_per_speaker):
                index += 1
                name = f"{part}_{index:04d}.wav"
                mood = labels[index - 1]
                audio = synthesize(rng, speaker, MOODS[mood], spec.seconds)
                sf.write(root / "wav" / name, audio, SAMPLE_RATE, subtype="PCM_16")
                if part == "test":
                    public.append(f"{name}\t")
                    confidential.append(f"{name}\t{mood}")
                else:
                    public.append(f"{name}\t{mood}")
    (root / "lab" / f"{spec.name}.tsv").write_text("\n".join(public) + "\n")
    (root / "lab" / f"{spec.name}_confidential.tsv").write_text("\n".join(confidential) + "\n")


def _partition_labels(
    rng: np.random.Generator, n: int, priors: tuple[float, float, float]
) -> list[str]:
    """Exact class shares per partition (then shuffled), so every class is present."""
    counts = [round(p * n) for p in priors[1:]]
    labels = [CLASSES[0]] * (n - sum(counts))
    for cls, count in zip(CLASSES[1:], counts, strict=True):
        labels += [cls] * count
    rng.shuffle(labels)
    return labels


def _sample_speaker(rng: np.random.Generator) -> _Speaker:
    return _Speaker(
        f0=float(rng.uniform(300, 460)),
        tract=float(rng.uniform(0.85, 1.2)),
        tilt=float(rng.uniform(2500, 7000)),
        snr_db=float(rng.uniform(3, 30)),
    )


def synthesize(
    rng: np.random.Generator, speaker: _Speaker, mood: _Mood, seconds: tuple[float, float]
) -> np.ndarray:
    """One utterance: voiced segments separated by pauses, peak-normalised."""
    duration = rng.uniform(*seconds)
    n = int(duration * SAMPLE_RATE)
    out = np.zeros(n)
    t = float(rng.uniform(0.0, 0.2))
    while t < duration - 0.1:
        seg = min(rng.uniform(*mood.segment_s), duration - t)
        start = int(t * SAMPLE_RATE)
        voiced = _voiced_segment(rng, speaker, mood, int(seg * SAMPLE_RATE))
        out[start : start + voiced.size] += voiced
        t += seg + rng.uniform(*mood.pause_s)
    noise = rng.standard_normal(n)
    power = np.mean(out**2) + 1e-12
    out += noise * np.sqrt(power / 10 ** (speaker.snr_db / 10))
    b, a = signal.butter(2, min(speaker.tilt, SAMPLE_RATE / 2 - 100), fs=SAMPLE_RATE)
    out = signal.lfilter(b, a, out)
    gain = rng.uniform(0.2, 0.9)
    return (gain * out / (np.max(np.abs(out)) + 1e-9)).astype(np.float32)


def _voiced_segment(rng: np.random.Generator, speaker: _Speaker, mood: _Mood, n: int) -> np.ndarray:
    if n < 16:
        return np.zeros(0)
    u = np.linspace(0.0, 1.0, n)
    base = speaker.f0 * rng.uniform(*mood.pitch)
    arc = rng.uniform(*mood.arc) * np.sin(np.pi * u) ** rng.uniform(0.5, 2.0)
    drift = rng.uniform(-0.1, 0.1) * u
    jitter = rng.uniform(*mood.jitter) * np.convolve(
        rng.standard_normal(n), np.ones(64) / 8, "same"
    )
    f0 = base * (1.0 + arc + drift + jitter)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    source = signal.sawtooth(phase, width=rng.uniform(0.7, 0.95))
    breath = rng.uniform(*mood.breath)
    source = (1 - breath) * source + breath * rng.standard_normal(n)
    voiced = _formants(source, speaker.tract * rng.uniform(0.95, 1.05))
    attack = max(1, int(0.03 * SAMPLE_RATE))
    envelope = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / attack)
    return voiced * envelope * rng.uniform(0.5, 1.0)


def _formants(source: np.ndarray, scale: float) -> np.ndarray:
    """Cascade of second-order resonators at infant-like formant frequencies."""
    out = source
    for freq, bandwidth in ((1100.0, 200.0), (3000.0, 300.0), (5200.0, 400.0)):
        f = min(freq * scale, SAMPLE_RATE / 2 - 500)
        r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
        theta = 2 * np.pi * f / SAMPLE_RATE
        a = [1.0, -2 * r * np.cos(theta), r * r]
        out = signal.lfilter([1.0 - r], a, out)
    return out
