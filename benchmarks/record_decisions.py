"""Record the decision benchmark: Page's 11 architectures at the cpu scale, 20 seeds each.

    NAS_DATA_DIR=../shared/data python benchmarks/record_decisions.py --db record.db

Launches (or resumes: the same command again continues where it stopped) page_post4's
`record` budget (search_spaces/page_post4.yaml: width 0.25, 5,000 training and 5,000 val
images, 4 epochs, test scored every epoch, seeds 20000-20019, disjoint from the search's
(0, ...) and the confirm phase's (10000, ...)), unpruned, into --db; then writes the completed
trials as one small file (`nas.trials.recorded.Recording`: every epoch's val and test accuracy
and train seconds, the last epoch's per-image correctness) to --out. About 220 trials of
~12 train seconds plus evaluation: 1-2 hours on this 2-core machine. `--export-only` writes the
file from a store as it is.

Ends with `RESULT recorded_runs=N of 220` and `RESULT recording_bytes=B`.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from nas.config.experiment import load_experiment
from nas.data.archive import resolve_data_root
from nas.db import Store
from nas.search.launch import launch
from nas.trials.recorded import from_store

PAGE = Path(__file__).resolve().parents[1] / "search_spaces" / "page_post4.yaml"
OUT = Path(__file__).resolve().parent / "data" / "page_post4_cpu_record.npz"
BUDGET = "record"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the store the runs go to (kept; the same again resumes)")
    parser.add_argument("--out", default=str(OUT), help="the recording file to write")
    parser.add_argument("--data-root", default=None, help="CIFAR-10 folder (default: $NAS_DATA_DIR or the cache)")
    parser.add_argument("--export-only", action="store_true", help="write the file from the store as it is")
    args = parser.parse_args()
    spec = load_experiment(PAGE, budget=BUDGET)
    with Store.open(args.db, read_only=args.export_only) as store:
        if not args.export_only:
            launch(spec, store=store, db_url=args.db, data_root=str(resolve_data_root(args.data_root)))
        command = f"NAS_DATA_DIR=../shared/data python benchmarks/record_decisions.py --db {Path(args.db).name}"
        recording = from_store(store, spec.name, {"budget": BUDGET, "command": command,
                                                  "written_at": datetime.now(UTC).isoformat(timespec="seconds")})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    recording.save(args.out)
    planned = len(spec.space.grid()) * spec.search.repeats
    print(f"RESULT recorded_runs={int(recording.complete.sum())} of {planned}")
    print(f"RESULT recording_bytes={Path(args.out).stat().st_size}")


if __name__ == "__main__":
    main()
