"""benchmarks/time_to_accuracy.py (issue 28): the time-to-accuracy rule, and a tiny run end to
end whose RESULT lines a script can read."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_accuracy.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("time_to_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_time_to_accuracy_is_the_train_seconds_at_the_first_epoch_reaching_the_target():
    bench = load_benchmark()
    run = bench.Run(val=[0.30, 0.52, 0.50, 0.61], seconds=[10.0, 21.0, 30.5, 41.0])
    assert run.time_to(0.50) == 21.0  # epoch 2 reaches it first; epoch 3 dipping below changes nothing
    assert run.time_to(0.61) == 41.0
    assert run.time_to(0.62) == math.inf  # never reached


def test_result_keys_are_the_short_names_made_readable():
    bench = load_benchmark()
    assert [bench.slug(n) for n in ("R:L1+L3", "base", "R:L1+L2+L3")] == ["R_L1_L3", "base", "R_L1_L2_L3"]


def test_the_candidates_differ_from_today_and_the_default_is_one_of_them():
    bench = load_benchmark()
    assert bench.DEFAULT_COMBO in bench.CANDIDATES
    assert all(tricks != bench.TricksConfig() for tricks in bench.CANDIDATES.values())
    assert bench.CHOOSE_SEED_BASE >= 3  # choosing shares no seed with what is reported


def test_a_tiny_run_prints_the_fixed_target_and_readable_result_lines(tiny_cifar_root, capsys):
    bench = load_benchmark()
    bench.main(["--data-root", str(tiny_cifar_root), "--archs", "base", "--seeds", "2", "--epochs", "1",
                "--width", "0.125", "--train-subset", "128", "--val-size", "64", "--batch-size", "64"])
    out = capsys.readouterr().out
    assert "targets fixed before the run" in out
    assert re.search(r"base: target val 0\.\d{4} \(median of today's last epochs\), fixed before the trick runs", out)
    results = dict(re.findall(r"^RESULT (\S+?)=(\S+)", out, flags=re.M))
    assert set(results) == {"time_ratio_base", f"images_per_s_{bench.TODAY}", f"images_per_s_{bench.DEFAULT_COMBO}"}
    ratio = float(results["time_ratio_base"])
    assert ratio > 0 or math.isinf(ratio)
    assert float(results[f"images_per_s_{bench.TODAY}"]) > 0
    assert out.rstrip().splitlines()[-3].endswith("target<=0.5")
