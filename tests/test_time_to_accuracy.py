"""benchmarks/time_to_accuracy.py (issue 28): the time-to-accuracy rule, and a tiny run end to
end whose RESULT lines a script can read."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

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
    assert bench.DEFAULT_COMBO in bench.TRICK_SETS and bench.DEFAULT_SCHEDULE in bench.SCHEDULES
    assert (bench.DEFAULT_COMBO, bench.DEFAULT_SCHEDULE) != (bench.NO_TRICKS, bench.TODAY)
    assert all(tricks != bench.TricksConfig() for tricks in bench.CANDIDATES.values())
    assert bench.TRICK_SETS[bench.NO_TRICKS] == bench.TricksConfig()
    assert bench.CHOOSE_SEED_BASE >= 3  # choosing shares no seed with what is reported


def test_a_schedule_scales_todays_lr_by_the_square_root_of_the_batch():
    bench = load_benchmark()
    args = bench.argparse.Namespace(epochs=4, batch_size=512)
    today = bench.SCHEDULES[bench.TODAY].recipe(args)
    assert (today.epochs, today.batch_size, today.lr) == (4, 512, bench.Recipe().lr)  # today's recipe itself
    small = bench.Schedule(epochs=2, batch_size=128).recipe(args)
    assert (small.epochs, small.batch_size) == (2, 128)
    assert small.lr == pytest.approx(today.lr / 2, abs=1e-4)
    assert [bench.combination_name(*c) for c in (("none", "today"), ("none", "b64_e1"), ("page", "today"))] == \
        ["today", "none@b64_e1", "page"]


TINY = ["--archs", "base", "--seeds", "2", "--epochs", "1", "--width", "0.125", "--train-subset", "128",
        "--val-size", "64", "--batch-size", "64"]


def _results(out: str) -> dict[str, str]:
    return dict(re.findall(r"^RESULT (\S+?)=(\S+)", out, flags=re.M))


def test_a_tiny_run_prints_the_fixed_target_and_readable_result_lines(tiny_cifar_root, capsys):
    bench = load_benchmark()
    bench.main(["--data-root", str(tiny_cifar_root), *TINY, "--combo", "page_no_ghost", "--schedule", "today"])
    out = capsys.readouterr().out
    assert "targets fixed before the run" in out
    assert re.search(r"base: target val 0\.\d{4} \(median of today's last epochs\), fixed before the other runs", out)
    results = _results(out)
    assert set(results) == {"time_ratio_base", f"images_per_s_{bench.TODAY}", "images_per_s_page_no_ghost"}
    ratio = float(results["time_ratio_base"])
    assert ratio > 0 or math.isinf(ratio)
    assert float(results[f"images_per_s_{bench.TODAY}"]) > 0
    assert out.rstrip().splitlines()[-3].endswith("target<=0.5")


def test_a_combination_with_a_schedule_reports_each_half_alone(tiny_cifar_root, capsys):
    bench = load_benchmark()
    bench.main(["--data-root", str(tiny_cifar_root), *TINY, "--combo", "pool_celu_tta", "--schedule", "b128_e2"])
    out = capsys.readouterr().out
    results = _results(out)
    assert set(results) == {"time_ratio_base", "time_ratio_schedule_only_base", "time_ratio_tricks_only_base",
                            *(f"images_per_s_{r}" for r in ("today", "pool_celu_tta_b128_e2", "none_b128_e2",
                                                              "pool_celu_tta"))}
    assert "pool_celu_tta@b128_e2: base t.activation=celu" in out and "2 epochs of batch 128, lr 0.5657" in out
    # the schedule alone trains two epochs of 128 (one step each) on each seed unless it stops early
    assert re.search(r"base none@b128_e2 +seed 0: val( 0\.\d{4}){1,2}  train", out)


def test_choosing_compares_every_trick_set_on_every_schedule_named(tiny_cifar_root, capsys):
    bench = load_benchmark()
    bench.main(["--data-root", str(tiny_cifar_root), *TINY, "--choose", "--choose-seeds", "1",
                "--candidates", "none", "pool_celu_tta", "--schedules", "today", "b64_e1"])
    out = capsys.readouterr().out
    assert "choosing among pool_celu_tta, none@b64_e1, pool_celu_tta@b64_e1 on R:L1+L3, seeds [1000]" in out
    chosen = re.search(r"^chosen: (\S+) ", out, flags=re.M).group(1)
    assert chosen in {"pool_celu_tta", "none@b64_e1", "pool_celu_tta@b64_e1"}
    assert f"combination {chosen}:" in out


def test_today_against_itself_is_refused():
    bench = load_benchmark()
    with pytest.raises(SystemExit) as refused:
        bench.main(["--combo", "none", "--schedule", "today"])
    assert refused.value.code == 2


def test_choose_only_stops_after_choosing(tiny_cifar_root, capsys):
    bench = load_benchmark()
    bench.main(["--data-root", str(tiny_cifar_root), *TINY, "--choose-only", "--choose-seeds", "1",
                "--candidates", "airbench", "--schedules", "b64_e1"])
    out = capsys.readouterr().out
    assert "chosen: airbench@b64_e1 " in out
    assert "RESULT" not in out and "targets fixed" not in out
