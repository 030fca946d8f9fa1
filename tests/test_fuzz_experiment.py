"""Hostile experiment files, generated (issue 14): every mutation of a real experiment file
(types, values, keys, structure, YAML features, bytes; see tests/experiment_mutations.py)
either loads as a spec that works, or is refused with one line naming the problem, exit
code 2 and nothing written.

- Level 1, many files: `load_experiment` returns a spec or raises a `NasError` whose
  message is one line of bounded length. Any other exception (TypeError, OverflowError,
  RecursionError, MemoryError...) is a bug. A spec must also survive what happens to it
  next: the store's JSON round trip, the sampler, the pruner deciding on a few trials, a
  few sampled architectures.
- Level 2, fewer files, those level 1 refuses: `nas launch FILE --db sqlite:///...` exits 2
  printing one line and no traceback; no database is created and an existing one keeps
  its bytes. A valid file is never launched (it would train), and should a refused one get
  past the config, Ray and the data are stubbed to fail the test instead of running.

CI runs a fixed set (derandomised): 500 files at level 1, 50 at level 2 (3 of them also
through a real `nas launch` process), about 25 s on 2 cores. For a long local run:
``NAS_FUZZ_EXAMPLES=5000 .venv/bin/pytest -q tests/test_fuzz_experiment.py`` (level 2 gets
an eighth), and ``NAS_FUZZ_SEED=N`` for other examples than CI's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, assume, given, note, seed, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nas.cli import app
from nas.config.experiment import ExperimentSpec, load_experiment
from nas.errors import NasError
from tests.experiment_mutations import MutatedFile, experiment_files, file_names

SCALE = int(os.environ.get("NAS_FUZZ_EXAMPLES", "0"))
LEVEL1 = SCALE or 500
LEVEL2 = max(SCALE // 8, 50)
SUBPROCESS = 3  # each starts Python and imports torch: seconds apiece
FUZZ_SEED = os.environ.get("NAS_FUZZ_SEED")
MAX_MESSAGE = 1000  # characters; the longest real message lists the architecture fields (about 500)
HANG_S = 120  # an example still running after this long hangs (one takes milliseconds)
runner = CliRunner()


def _fuzz(examples: int):
    """Bounded, reproducible settings: CI runs the same examples every time."""
    configured = settings(
        max_examples=examples, deadline=None, database=None, derandomize=FUZZ_SEED is None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    return (lambda test: seed(int(FUZZ_SEED))(configured(test))) if FUZZ_SEED else configured


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module", autouse=True)
def quiet_optuna():
    """Optuna logs a line per in-memory study; level 1 makes hundreds."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


@contextmanager
def _hang_guard():
    """TimeoutError if the body runs past HANG_S: a hang fails the example instead of CI."""

    def fail(signum, frame):
        raise TimeoutError(f"still running after {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _write(workdir: Path, file: MutatedFile, name: str = "x.yaml") -> Path:
    note(f"{file.base} {file.steps} budget={file.budget!r}\n{file.text[:3000]}")
    path = Path(tempfile.mkdtemp(dir=workdir)) / name
    path.write_bytes(file.content)
    return path


def _load(path: Path, budget: str | None) -> ExperimentSpec | NasError:
    """The spec, or the user error `load_experiment` raised; any other exception propagates."""
    with warnings.catch_warnings(), _hang_guard():
        warnings.simplefilter("ignore")  # selecting on test_acc warns, as it should
        try:
            return load_experiment(path, budget)
        except NasError as err:
            return err


def _assert_one_line(err: NasError) -> None:
    message = str(err)
    note(f"message: {message[:2000]!r}")
    assert message.strip(), "an empty message"
    assert len(message.splitlines()) == 1 and "\n" not in message and "\r" not in message, message
    assert len(message) <= MAX_MESSAGE, f"{len(message)} characters"
    assert "Traceback" not in message


def _assert_usable(spec: ExperimentSpec) -> None:
    """What happens to a spec after `load_experiment` works: it is stored as JSON and read
    back, its data folder is looked at, its sampler and pruner are built, the pruner decides,
    architectures are sampled."""
    from nas.search.pruning import NoiseMargin, pilot_size, pruning_gate, with_warmup

    stored = json.loads(json.dumps(spec.resolved(), allow_nan=False))
    again = ExperimentSpec.from_resolved(stored, source="stored")
    assert again.resolved() == spec.resolved()
    if spec.dataset.root is not None:
        Path(spec.dataset.root).exists()  # the data check opens it: ValueError on a NUL byte, ...
    spec.search.build_sampler()
    pruning_gate(spec.search.pruner, spec.recipe)
    NoiseMargin.of(spec.search.pruner)
    pilot_size(spec.search.pruner, spec.search.repeats, spec.search.n_trials)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=with_warmup(spec.search.pruner, spec.recipe).build())
    for number in range(4):
        trial = study.ask()
        try:
            spec.space.suggest(trial)
        except NasError:
            pass  # two values that are each valid may not combine; the trial records that
        for step in range(3):
            trial.report(0.1 * number + 0.01 * step, step)
            if trial.should_prune():
                break
        study.tell(trial, 0.1 * number)


# ----------------------------------------------------------------------------- level 1


@_fuzz(LEVEL1)
@given(file=experiment_files(), name=file_names)
def test_a_mutated_experiment_file_loads_as_a_usable_spec_or_is_refused_in_one_line(workdir, file, name):
    path = _write(workdir, file, name)
    outcome = _load(path, file.budget)
    assert list(path.parent.iterdir()) == [path], "load_experiment wrote beside the file"
    if isinstance(outcome, NasError):
        _assert_one_line(outcome)
    else:
        with warnings.catch_warnings(), _hang_guard():
            warnings.simplefilter("ignore")  # test_acc warns again when read back; PatientPruner is experimental
            _assert_usable(outcome)


# ----------------------------------------------------------------------------- level 2


class _PastTheConfig(AssertionError):
    """Raised by the stubs of Ray and the data: `nas launch` went past a refused config."""


@pytest.fixture(scope="module")
def nothing_runs():
    """Ray and the data stubbed to fail: a launch that gets past the config check fails the
    test rather than downloading CIFAR-10 or training."""

    def past(*args, **kwargs):
        raise _PastTheConfig("nas launch went past the config check")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("nas.cli.launch.start_ray", past)
        patch.setattr("nas.data.archive.resolve_data_root", past)
        patch.setattr("nas.data.archive.ensure_cifar10", past)
        yield


@pytest.fixture(scope="module")
def empty_store(workdir) -> Path:
    """An empty nas store, as a first `nas launch` leaves it."""
    from nas.db import Store

    db = workdir / "empty.db"
    Store.open(f"sqlite:///{db}").close()
    return db


def _launch_args(path: Path, budget: str | None, db: Path) -> list[str]:
    return ["launch", str(path), f"--db=sqlite:///{db}", f"--budget={'none' if budget is None else budget}",
            f"--data-root={path.parent / 'no-data'}"]


def _refused(workdir: Path, file: MutatedFile, name: str = "x.yaml") -> Path:
    """The written file, for a file level 1 refuses (a valid one is not launched: it would train)."""
    assume(file.budget != "none")  # --budget none means no budget, not the budget named none
    path = _write(workdir, file, name)
    assume(isinstance(_load(path, file.budget), NasError))
    return path


@_fuzz(LEVEL2)
@given(file=experiment_files(), name=file_names, existing=st.booleans())
def test_launch_refuses_a_mutated_file_with_exit_2_one_line_and_nothing_written(
    workdir, nothing_runs, empty_store, file, name, existing
):
    path = _refused(workdir, file, name)
    db = path.parent / "nas.db"
    if existing:
        shutil.copy(empty_store, db)
    before = db.read_bytes() if existing else None
    result = runner.invoke(app, _launch_args(path, file.budget, db))
    note(f"exit {result.exit_code}; stdout {result.stdout!r}; stderr {result.stderr!r}")
    assert not isinstance(result.exception, _PastTheConfig)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    assert (db.read_bytes() == before) if existing else not db.exists()
    assert not (path.parent / "no-data").exists()


@_fuzz(SUBPROCESS)
@given(file=experiment_files())
def test_the_real_nas_launch_process_refuses_a_mutated_file_in_one_line(workdir, file):
    path = _refused(workdir, file)
    db = path.parent / "nas.db"
    done = subprocess.run([sys.executable, "-m", "nas", *_launch_args(path, file.budget, db)],
                          capture_output=True, text=True, errors="replace", timeout=HANG_S)
    note(f"exit {done.returncode}; stdout {done.stdout!r}; stderr {done.stderr!r}")
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: ")
    assert not db.exists() and not (path.parent / "no-data").exists()
