"""Helpers several test modules share (test modules never import each other)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nas.dashboard
import numpy as np
import yaml

# ---- experiments ----------------------------------------------------------------------


def experiment_yaml(path: Path, **sections) -> Path:
    """A tiny experiment: 2x2 residual placements, width 0.125, 3 epochs of 40 images/class."""
    spec = {
        "name": "tiny",
        "dataset": {"val_size": 100},
        "recipe": {"epochs": 3, "batch_size": 50, "eval_batch_size": 256},
        "space": {
            "width": {"fixed": 0.125},
            "L1.residual": {"choice": [0, 1]},
            "L3.residual": {"choice": [0, 1]},
        },
        "search": {"sampler": "grid", "pruner": {"kind": "none"}},
        "confirm": {"top_k": 0, "repeats": 1},
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
    }
    for key, value in sections.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key != "space" else value
    path.write_text(yaml.safe_dump(spec))
    return path


# ---- the dashboard under Streamlit's AppTest ---------------------------------------------

APP = Path(nas.dashboard.__file__).resolve().parent / "app.py"
TIMEOUT_S = 60  # the first run imports torch (via nas.models); later runs take ~0.1 s


def figures_of(at) -> list[dict]:
    """The Plotly figures of the page, with typed arrays decoded to lists."""
    return [_decode(json.loads(chart.proto.spec)) for chart in at.get("plotly_chart")]


def _decode(obj):
    """Plotly >= 6 writes numeric arrays as ``{"dtype", "bdata"[, "shape"]}`` (base64)."""
    if isinstance(obj, dict) and "bdata" in obj and "dtype" in obj:
        array = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
        if "shape" in obj:
            array = array.reshape([int(n) for n in str(obj["shape"]).split(",")])
        return array.tolist()
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def trace(at, name: str) -> dict:
    found = [t for fig in figures_of(at) for t in fig["data"] if t.get("name") == name]
    assert found, f"no trace named {name!r}"
    return found[0]
