"""Frontends: audio file -> feature matrix [frames, features].

Each frontend is a frozen dataclass (its fields are the cache key) with an
``extract(path)`` method. Spectral features come from librosa; openSMILE features come
from the optional ``opensmile`` package. Users who already extracted features give an
openSMILE-style CSV instead (see :func:`read_feature_csv`).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.errors import UserError


class Frontend(Protocol):
    """Turns one audio file into a float32 matrix [frames, features]."""

    def extract(self, path: Path) -> np.ndarray: ...

    def config(self) -> dict: ...


#: the largest sample a float wav may hold: headroom above full scale (1.0) is normal,
#: a thousand times it is a corrupt or unscaled file (and 1e30 overflows the features)
MAX_PEAK = 1000.0


def read_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 audio at ``sample_rate``, its first ``max_seconds`` only when given (only
    those are read); unreadable or empty files are user errors."""
    import librosa
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            rate = f.samplerate
            frames = -1 if max_seconds is None else round(max_seconds * rate)
            audio = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise UserError(f"unreadable wav {path}: {exc}") from None
    if audio.size == 0:
        raise UserError(f"empty wav {path}: no samples")
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:
        raise UserError(f"wav {path}: {bad} samples are NaN or infinite (a float wav gone bad)")
    peak = float(np.abs(audio).max())
    if peak > MAX_PEAK:
        raise UserError(
            f"wav {path}: a sample of {peak:.3g}, far outside [-1, 1] (float wavs hold "
            "samples in [-1, 1]; this one is corrupt or written unscaled)"
        )
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate)
    return audio


@dataclass(frozen=True)
class LogMel:
    """Log-mel spectrogram (dB), one frame per hop."""

    sample_rate: int = 16000
    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 20.0
    max_seconds: float | None = None  # crop each file to its first seconds (--max-seconds)

    def config(self) -> dict:
        return {"kind": "logmel", **_settings(self)}

    def extract(self, path: Path) -> np.ndarray:
        import librosa

        audio = read_audio(path, self.sample_rate, self.max_seconds)
        with _short_files_quiet():
            mel = librosa.feature.melspectrogram(
                y=audio,
                sr=self.sample_rate,
                n_fft=_fft_size(self.win_ms, self.sample_rate),
                win_length=int(self.win_ms * self.sample_rate / 1000),
                hop_length=int(self.hop_ms * self.sample_rate / 1000),
                n_mels=self.n_mels,
            )
        return librosa.power_to_db(mel, ref=1.0, top_db=None).T.astype(np.float32)


@dataclass(frozen=True)
class MFCC:
    """MFCCs with first and second deltas (39 features by default)."""

    sample_rate: int = 16000
    n_mfcc: int = 13
    n_mels: int = 40
    deltas: bool = True
    win_ms: float = 25.0
    hop_ms: float = 20.0
    max_seconds: float | None = None  # crop each file to its first seconds (--max-seconds)

    def config(self) -> dict:
        return {"kind": "mfcc", **_settings(self)}

    def extract(self, path: Path) -> np.ndarray:
        import librosa

        audio = read_audio(path, self.sample_rate, self.max_seconds)
        with _short_files_quiet():
            mfcc = librosa.feature.mfcc(
                y=audio,
                sr=self.sample_rate,
                n_mfcc=self.n_mfcc,
                n_fft=_fft_size(self.win_ms, self.sample_rate),
                win_length=int(self.win_ms * self.sample_rate / 1000),
                hop_length=int(self.hop_ms * self.sample_rate / 1000),
                n_mels=self.n_mels,
            )
        if self.deltas:
            width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))
            if width >= 3:
                d1 = librosa.feature.delta(mfcc, width=width, order=1)
                d2 = librosa.feature.delta(mfcc, width=width, order=2)
            else:
                d1 = d2 = np.zeros_like(mfcc)
            mfcc = np.concatenate([mfcc, d1, d2])
        return mfcc.T.astype(np.float32)


@dataclass(frozen=True)
class MFCCFunctionals(MFCC):
    """One vector per file: the MFCC frames' mean, standard deviation and 1st, 50th and
    99th percentiles per coefficient (the functionals a linear baseline takes)."""

    def config(self) -> dict:
        return {"kind": "mfcc-functionals", **_settings(self)}

    def extract(self, path: Path) -> np.ndarray:
        frames = super().extract(path)
        stats = [frames.mean(0), frames.std(0), *np.percentile(frames, [1, 50, 99], axis=0)]
        return np.concatenate(stats)[None, :].astype(np.float32)


@dataclass(frozen=True)
class OpenSmile:
    """openSMILE features: low-level descriptors (frames) or functionals (one vector)."""

    feature_set: str = "ComParE_2016"
    level: str = "lld"
    sample_rate: int = 16000
    max_seconds: float | None = None  # crop each file to its first seconds (--max-seconds)

    def config(self) -> dict:
        return {"kind": "opensmile", **_settings(self)}

    def _smile(self):
        try:
            import opensmile
        except ImportError:
            raise UserError(
                "the openSMILE frontend needs the optional extra: "
                "pip install 'automl-rl[opensmile]'"
            ) from None
        levels = {
            "lld": opensmile.FeatureLevel.LowLevelDescriptors,
            "functionals": opensmile.FeatureLevel.Functionals,
        }
        return opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, self.feature_set),
            feature_level=levels[self.level],
        )

    def extract(self, path: Path) -> np.ndarray:
        audio = read_audio(path, self.sample_rate, self.max_seconds)
        frame = self._smile().process_signal(audio, self.sample_rate)
        return np.nan_to_num(frame.to_numpy(dtype=np.float32))


FRONTENDS = {
    "mfcc": MFCC,
    "logmel": LogMel,
    "mfcc-functionals": MFCCFunctionals,
    "compare-lld": partial(OpenSmile, "ComParE_2016", "lld"),
    "egemaps-lld": partial(OpenSmile, "eGeMAPSv02", "lld"),
    # utterance-level functionals: one vector per file (the challenge baseline's input)
    "compare": partial(OpenSmile, "ComParE_2016", "functionals"),
    "egemaps": partial(OpenSmile, "eGeMAPSv02", "functionals"),
}
#: frontends that give one vector per file rather than a sequence of frames
FUNCTIONALS = ("mfcc-functionals", "compare", "egemaps")


def _settings(frontend: object) -> dict:
    """A frontend's fields for its cache key; an unset crop is left out, so the features
    cached before the option existed are still found."""
    return {k: v for k, v in asdict(frontend).items() if not (k == "max_seconds" and v is None)}


def make_frontend(name: str, max_seconds: float | None = None) -> Frontend:
    """A frontend by its command-line name (see ``FRONTENDS``)."""
    if name not in FRONTENDS:
        raise UserError(f"unknown --frontend {name!r}; choose from {sorted(FRONTENDS)} or csv:PATH")
    return FRONTENDS[name](max_seconds=max_seconds)


@contextmanager
def _short_files_quiet() -> Iterator[None]:
    """A file shorter than one analysis window (tens of ms) still gives a frame, from the
    zero-padded window: librosa's warning that ``n_fft`` is larger than the signal says
    nothing the user must act on, and would print raw once per such file."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        yield


def _fft_size(win_ms: float, rate: int) -> int:
    return 1 << int(np.ceil(np.log2(win_ms * rate / 1000)))


NON_FEATURE_COLUMNS = {"name", "frametime", "class", "label", "file", "start", "end"}


def read_feature_csv(path: Path) -> dict[str, np.ndarray]:
    """Features an openSMILE run wrote: ``;``-separated, a ``name`` column, rows per file or frame.

    Returns the matrix [frames, features] of every file name (quotes stripped), rows in file order.
    """
    if not path.is_file():
        raise UserError(f"feature file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = next(reader, None)
        if header is None or "name" not in [h.strip().strip("'") for h in header]:
            raise UserError(
                f"feature file {path}: expected ';'-separated columns with a 'name' column"
            )
        header = [h.strip().strip("'") for h in header]
        name_col = header.index("name")
        keep = [i for i, h in enumerate(header) if h.lower() not in NON_FEATURE_COLUMNS]
        if not keep:
            raise UserError(f"feature file {path}: no feature columns beside {header}")
        rows: dict[str, list[list[float]]] = {}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(
                    f"feature file {path}, line {lineno}: "
                    f"{len(row)} fields, header has {len(header)}"
                )
            try:
                values = [float(row[i]) for i in keep]
            except ValueError:
                raise UserError(
                    f"feature file {path}, line {lineno}: a feature value is not a number"
                ) from None
            rows.setdefault(row[name_col].strip().strip("'"), []).append(values)
    return {name: np.asarray(v, dtype=np.float32) for name, v in rows.items()}
