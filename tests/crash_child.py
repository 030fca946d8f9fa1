"""A search and its race, replayed from a fixed synthetic recording through the real launch
path (controller, pruner with its pilot, recorder, write-behind, race) in this process: the
driver that `tests/test_crash_points.py` kills at random moments and runs again.

    python tests/crash_child.py DB_URL FOLDER [NAME]
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path


EPOCHS, SEEDS, VAL = 4, 12, 400
SPACE = {"width": {"fixed": 0.125}, "L1.residual": {"choice": [0, 1]}, "L2.residual": {"choice": [0, 1]},
         "L3.residual": {"choice": [0, 1]}}
SEARCH_SEEDS = (0, 1)  # the search's seed, and the pilot's second
CONFIRM = {"top_k": 2, "repeats": 3, "until_separated": True, "max_repeats": 4}
EPOCH_S = 0.04  # each replayed epoch takes this long, so that a kill lands anywhere


def spec(folder: Path, name: str = "crash"):
    from nas.config.experiment import load_experiment
    from tests.helpers import experiment_yaml

    return load_experiment(experiment_yaml(
        folder / f"{name}.yaml", name=name, space=SPACE, dataset={"val_size": VAL},
        recipe={"epochs": EPOCHS, "warmup": 0.2},
        search={"sampler": "grid", "pruner": {"kind": "median", "n_startup_trials": 3, "pilot": 3}}, confirm=CONFIRM))


def recording(experiment):
    """Curves rising to a level set by the residual blocks, with seed noise (seeded: the same
    recording in every run)."""
    from tests.helpers import rising_recording

    return rising_recording(experiment, lambda arch: 0.5 + 0.06 * sum(getattr(arch, s).residual for s in ("L1", "L2", "L3")),
                            seeds=SEEDS, epochs=EPOCHS, val_images=VAL, rng_seed=11)


def main(db_url: str, folder: str, name: str = "crash") -> None:
    from nas.db import Store
    from nas.search.launch import launch
    from nas.search.race import CONFIRM_SEED_BASE
    from nas.trials.inline import run_inline
    from nas.trials.replay import ReplayRun, recorded_seed_map

    class Slow(ReplayRun):
        def next_result(self):
            time.sleep(EPOCH_S)
            return super().next_result()

    experiment = spec(Path(folder), name)
    recorded = recording(experiment)
    played = [*SEARCH_SEEDS, *range(CONFIRM_SEED_BASE, CONFIRM_SEED_BASE + CONFIRM["max_repeats"])]
    seeds = recorded_seed_map(played, list(recorded.seeds[: len(played)]))
    print("started", flush=True)
    with Store.open(db_url) as store:
        launch(experiment, store=store, db_url=db_url, data_root=folder, log=lambda line: None,
               executor=partial(run_inline, make_run=partial(Slow, recorded, seeds)))
    print("finished", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(*sys.argv[1:4])
