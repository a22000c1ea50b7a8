"""``automl export``: a model as one self-contained file, TorchScript or ONNX.

The file holds normalisation, network and softmax (:class:`automl.ship.bundle.Scorer`) and the
bundle's meta (classes, frontend), takes one utterance's features [frames, features] of
any length and returns class probabilities. Both formats go through TorchScript, because
the children's recurrent layers with a configurable activation run a loop over time
steps: ``torch.jit.script`` keeps it a loop (an ONNX ``Loop``), where tracing or
``torch.export`` fixes the number of frames to the example's. Both paths are deprecated
in torch 2.9+ without a replacement for such loops yet; the warnings say so and are
silenced here. Every export is checked against the PyTorch model before it is kept.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from automl.ship import bundle
from automl.ship.inference import ONNX_META_KEY, TORCHSCRIPT_META, from_scorer
from automl.ship.inference import load as load_predictor
from runtime.errors import UserError
from runtime.files import atomic_write

FORMATS = ("torchscript", "onnx")
TOLERANCE = 1e-4  # largest difference in any probability between export and model


def export(meta: bundle.ModelMeta, weights: dict, fmt: str, out: Path,
           examples: list[np.ndarray]) -> float:  # fmt: skip
    """Write the model to ``out`` as ``fmt``; returns the largest probability difference
    between the file and the PyTorch model on ``examples`` (utterances of different
    lengths). A larger one than :data:`TOLERANCE` writes nothing."""
    scorer = bundle.build_scorer(meta, weights)
    predictor = from_scorer(meta, scorer)
    with tempfile.TemporaryDirectory() as tmp:
        written = Path(tmp) / out.name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
            warnings.filterwarnings("ignore", ".*batch_size other than 1", UserWarning)
            scripted = torch.jit.script(scorer)
            if fmt == "torchscript":
                extra = {TORCHSCRIPT_META: meta.to_json()}
                torch.jit.save(scripted, str(written), _extra_files=extra)
            else:
                _onnx(scripted, meta, examples[0], written)
        exported = load_predictor(str(written))
        gap = max(
            float(np.abs(exported.probabilities(x) - predictor.probabilities(x)).max())
            for x in examples
        )
        if gap > TOLERANCE:
            raise UserError(f"the {fmt} export differs from the model by {gap:.2g}: not written")
        data = written.read_bytes()
    atomic_write(out, lambda handle: handle.write(data))
    return gap


def _onnx(scripted: torch.jit.ScriptModule, meta: bundle.ModelMeta, example: np.ndarray,
          path: Path) -> None:  # fmt: skip
    import onnx

    torch.onnx.export(
        scripted, (torch.from_numpy(example),), str(path), dynamo=False,
        input_names=["features"], output_names=["probabilities"],
        dynamic_axes={"features": {0: "frames"}},
    )  # fmt: skip
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {ONNX_META_KEY: meta.to_json()})
    onnx.save(model, str(path))


def probe_inputs(
    meta: bundle.ModelMeta, lengths: tuple[int, ...] = (1, 37, 300)
) -> list[np.ndarray]:
    """Utterances to check an export on: features on the scale of the training data's
    (its normalisation statistics), one per length; seeded, so a check repeats."""
    rng = np.random.default_rng(0)
    mean, std = np.asarray(meta.norm_mean), np.asarray(meta.norm_std)
    return [(mean + std * rng.standard_normal((n, len(mean)))).astype(np.float32) for n in lengths]
