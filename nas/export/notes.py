"""What model.py's PROVENANCE says about how the network was trained: the drops, the early
exits, the training tricks; plain sentences for people reading the exported file."""

from __future__ import annotations

from nas.models import STAGES, ArchConfig


def training_note(arch: ArchConfig) -> str:
    drop = arch.drop
    if drop.kind == "none" and not any(getattr(arch, s).fractal for s in STAGES):
        return "Nothing is dropped in training, so this is exactly the trained network."
    notes = {
        "stochastic_depth": f"stochastic depth (final drop rate {drop.rate:g}; survivors scaled by 1/p in "
                            "training, so at evaluation every block runs unscaled)",
        "depth_dropout": f"depth dropout (rate {drop.rate:g}; the trainable 1x1 shortcuts stay, the "
                         "bypass is training-only)",
        "drop_path": f"drop-path (rate {drop.rate:g}, global share {drop.global_share:g}; training-only)",
        "width_dropout": f"width dropout (rate {drop.rate:g}, inverted scaling; training-only)",
    }
    if drop.kind == "none":
        return "Fractal joins average every column, as at evaluation in training."
    return f"Trained with {notes[drop.kind]}: here, the evaluation form, nothing is dropped."


def exits_note(arch: ArchConfig) -> str:
    if not arch.exits.stages:
        return ""
    weights = ", ".join(f"{s} {w:g}" for s, w in zip(arch.exits.stages, arch.exits.weights))
    return (f"Early exits (BranchyNet) after {'+'.join(arch.exits.stages)}, trained with loss weights "
            f"{weights} (final 1): model(x) is the final exit; model.forward_early_exit(x) lets images "
            f"leave early (threshold {arch.exits.threshold:g}); model.forward_exits(x) gives every exit's logits.")


def tricks_note(arch: ArchConfig) -> str:
    """The training tricks that were on, and how model.py holds each; "" when none."""
    on = arch.to_dict().get("tricks", {})
    if not on:
        return ""
    text = "Trained with " + ", ".join(f"{k}={v}" for k, v in on.items()) + "."
    if arch.tricks.ema_decay or arch.tricks.lookahead:
        text += " The weights are the averaged ones that were evaluated (EMA / lookahead's slow weights)."
    if arch.tricks.tta != "none":
        text += f" Its accuracy was measured with test-time augmentation {arch.tricks.tta}: model.forward_tta(x)."
    return text
