"""What a finished trial leaves besides its epochs: one class per artefact.

Each artefact says when it applies, how it is computed from the trained model (in the
process that trained it: the Ray worker, or `nas train`), how it travels to the driver in
the trial's last result (JSON-safe text), and how it is stored. The trial runner, the Ray
glue and the recorder only loop over `ARTIFACTS`, so a new artefact is its class here, its
table (db/schema.py and a migration; `save` writes it with `Store.replace_trial_rows`) and
its dashboard view.
"""

from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from nas.models.arch import ArchConfig

if TYPE_CHECKING:
    from torch import nn

    from nas.data.config import DataConfig
    from nas.data.tensors import CifarSplits
    from nas.db import Store
    from nas.training.recipe import Recipe


@dataclass(frozen=True)
class TrialSetup:
    """What a trial trained, as far as its artefacts need to know."""

    arch: ArchConfig
    recipe: Recipe
    data_cfg: DataConfig
    seed: int
    save_weights: bool = False  # confirm trials keep their weights for `nas export`


class Artifact:
    """One per-trial artefact. Subclasses set `name` and implement the four steps."""

    name: ClassVar[str]  # its key in a trial's last result
    announce: ClassVar[str] = ""  # said before computing it, when that takes a while

    def applies(self, setup: TrialSetup) -> bool:
        raise NotImplementedError

    def compute(self, model: nn.Module, data: CifarSplits, setup: TrialSetup) -> Any:
        raise NotImplementedError

    def encode(self, value: Any) -> str:
        raise NotImplementedError

    def decode(self, text: str) -> Any:
        raise NotImplementedError

    def save(self, store: Store, trial_id: int, value: Any) -> None:
        raise NotImplementedError

    def final_metrics(self, value: Any, setup: TrialSetup) -> dict[str, float]:
        """Metrics the artefact adds to the trial's last result (objectives may use them)."""
        return {}


class Weights(Artifact):
    """The final state_dict, on the CPU, as `torch.save` bytes (base64 on the wire: Ray's
    result bookkeeping wants JSON-safe values, and checkpoints would need storage shared by
    every node, while only the driver writes the store)."""

    name = "weights"

    def applies(self, setup: TrialSetup) -> bool:
        return setup.save_weights

    def compute(self, model, data, setup) -> bytes:
        import torch

        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
        return buffer.getvalue()

    def encode(self, value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    def decode(self, text: str) -> bytes:
        return base64.b64decode(text)

    def save(self, store, trial_id, value: bytes) -> None:
        store.save_weights(trial_id, value)


class ExitCurveArtifact(Artifact):
    """BranchyNet's accuracy-vs-FLOPs curve across exit thresholds (`nas.models.exits`), and
    its operating point: the mean inference FLOPs at the architecture's threshold."""

    name = "exit_curve"

    def applies(self, setup: TrialSetup) -> bool:
        return bool(setup.arch.exits.stages)

    def compute(self, model, data, setup):
        from nas.training.evaluate import exit_curve

        return exit_curve(model, setup.arch, data, setup.recipe.eval_batch_size)

    def encode(self, value) -> str:
        return value.to_json()

    def decode(self, text: str):
        from nas.models.exits import ExitCurve

        return ExitCurve.from_json(text)

    def save(self, store, trial_id, value) -> None:
        store.save_exit_curve(trial_id, value.split, [asdict(p) for p in value.points])

    def final_metrics(self, value, setup: TrialSetup) -> dict[str, float]:
        return {"mean_inference_flops": value.at(setup.arch.exits.threshold).mean_flops}


class WidthCurveArtifact(Artifact):
    """A US-Net's params, FLOPs and accuracy per width ratio, BN statistics recomputed per
    width (`nas.training.usnets.accuracy_at_widths`)."""

    name = "width_curve"
    announce = "measuring every width (BN statistics recomputed per width) ..."

    def applies(self, setup: TrialSetup) -> bool:
        return setup.recipe.slimmable is not None

    def compute(self, model, data, setup):
        from nas.training.usnets import accuracy_at_widths, curve_widths

        return accuracy_at_widths(model, data, setup.data_cfg, setup.recipe,
                                  curve_widths(setup.recipe.slimmable), seed=setup.seed)

    def encode(self, value) -> str:
        return value.to_json()

    def decode(self, text: str):
        from nas.training.usnets import WidthCurve

        return WidthCurve.from_json(text)

    def save(self, store, trial_id, value) -> None:
        store.save_width_curve(trial_id, [asdict(p) for p in value.points])


ARTIFACTS: tuple[Artifact, ...] = (ExitCurveArtifact(), WidthCurveArtifact(), Weights())
WIRE_KEY = "artifacts"  # a finished trial's last result: {artefact name: encoded value}


def compute_artifacts(model: nn.Module, data: CifarSplits, setup: TrialSetup,
                      log=lambda line: None) -> dict[str, Any]:
    """Every artefact that applies to `setup`, computed from the trained `model`."""
    values = {}
    for artifact in ARTIFACTS:
        if artifact.applies(setup):
            if artifact.announce:
                log(artifact.announce)
            values[artifact.name] = artifact.compute(model, data, setup)
    return values


def final_metrics(values: dict[str, Any], setup: TrialSetup) -> dict[str, float]:
    """The metrics the artefacts in `values` add to a trial's last result."""
    out: dict[str, float] = {}
    for artifact in ARTIFACTS:
        if artifact.name in values:
            out.update(artifact.final_metrics(values[artifact.name], setup))
    return out


def encode_artifacts(values: dict[str, Any]) -> dict[str, str]:
    return {a.name: a.encode(values[a.name]) for a in ARTIFACTS if a.name in values}


def decode_artifacts(wire: dict[str, str]) -> dict[str, Any]:
    unknown = sorted(set(wire) - {a.name for a in ARTIFACTS})
    if unknown:
        raise ValueError(f"unknown trial artefacts {unknown}; the worker runs another nas version.")
    return {a.name: a.decode(wire[a.name]) for a in ARTIFACTS if a.name in wire}
