"""The tables of the nas store: experiments, architectures, trials and their epochs.

Optuna's own tables (`studies`, `trials`, `alembic_version`, ...) live in the same
database, so every table here starts with ``nas_`` and our Alembic version table is
``nas_alembic_version``: without the prefix our `trials` would collide with Optuna's.

Times are timezone-aware UTC datetimes on both SQLite (which stores naive text, so
`UTCDateTime` re-attaches UTC on read) and PostgreSQL (``timestamp with time zone``).
Accuracies are fractions in [0, 1], each beside the number of images it was measured on
(``*_images``); seconds are wall-clock seconds.

A change here needs a new revision under ``db/migrations/versions/``; the test
`test_migrations_match_the_schema` fails until the two agree.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# ---- constants other code imports ---------------------------------------------------


class ExperimentStatus(enum.StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # Ctrl-C or a lost driver; the rows so far are kept


class TrialStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # trained for all planned epochs
    PRUNED = "pruned"  # stopped early by the Optuna pruner
    FAILED = "failed"  # raised; the message is in `error`
    DIVERGED = "diverged"  # loss became NaN/inf
    INTERRUPTED = "interrupted"  # the driver stopped while it ran; no result, re-run it


class Phase(enum.StrEnum):
    TRAIN = "train"  # a single `nas train` run outside any search
    SEARCH = "search"  # one seed per architecture, pruned
    CONFIRM = "confirm"  # top-K re-run with several seeds, unpruned
    ABLATION = "ablation"  # leave-one-component-out variants of the winner


# Optuna's RDB storage keeps its own `alembic_version` in the same database.
ALEMBIC_VERSION_TABLE = "nas_alembic_version"


# ---- column types -------------------------------------------------------------------


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only kind stored here)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    SQLite keeps no offset, so values are converted to UTC before writing and tagged
    as UTC after reading; PostgreSQL returns them in the session time zone, which is
    converted back to UTC so both backends give equal values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}; store aware UTC datetimes only.")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# Named constraints: SQLite batch migrations (table copy) can only drop or alter a
# constraint that has a name, and the names are the same on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# ---- tables -------------------------------------------------------------------------


class Experiment(Base):
    """One `nas launch` (or `nas train`/`nas ablate`) run, found again by its name."""

    __tablename__ = "nas_experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(
        String(16), default=ExperimentStatus.RUNNING.value, server_default="running"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    config_json: Mapped[str | None] = mapped_column(Text)  # resolved experiment config
    space_yaml: Mapped[str | None] = mapped_column(Text)  # the search-space YAML as given
    code_version: Mapped[str | None] = mapped_column(String(64))  # e.g. git describe


class Architecture(Base):
    """One network of the family, keyed by the hash of its canonical config."""

    __tablename__ = "nas_architectures"

    hash: Mapped[str] = mapped_column(String(16), primary_key=True)
    config_json: Mapped[str] = mapped_column(Text)  # canonical JSON (ArchConfig.to_json)
    short_name: Mapped[str] = mapped_column(String(200))  # e.g. "R:L1+L3 w=0.5"
    params: Mapped[int] = mapped_column(BigInteger)  # trainable parameters
    flops: Mapped[int] = mapped_column(BigInteger)  # forward FLOPs per 32x32 image
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Trial(Base):
    """One training run of (architecture, seed) in one phase of an experiment."""

    __tablename__ = "nas_trials"
    __table_args__ = (
        Index("ix_nas_trials_experiment_phase_status", "experiment_id", "phase", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("nas_experiments.id", ondelete="CASCADE")
    )
    arch_hash: Mapped[str] = mapped_column(ForeignKey("nas_architectures.hash"), index=True)
    seed: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16))  # a Phase value
    status: Mapped[str] = mapped_column(
        String(16), default=TrialStatus.RUNNING.value, server_default="running"
    )
    epochs_planned: Mapped[int] = mapped_column(Integer)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    final_train_loss: Mapped[float | None] = mapped_column(Float)  # of the last epoch
    final_train_acc: Mapped[float | None] = mapped_column(Float)
    final_val_acc: Mapped[float | None] = mapped_column(Float)
    final_test_acc: Mapped[float | None] = mapped_column(Float)
    final_val_images: Mapped[int | None] = mapped_column(Integer)  # images final_val_acc was measured on
    final_test_images: Mapped[int | None] = mapped_column(Integer)  # None: not measured, or an older store
    best_val_acc: Mapped[float | None] = mapped_column(Float)  # max over recorded epochs
    train_seconds: Mapped[float | None] = mapped_column(Float)  # wall s, excluding eval
    device: Mapped[str] = mapped_column(String(100))  # e.g. "NVIDIA H100 80GB HBM3"
    recipe_json: Mapped[str] = mapped_column(Text)  # training recipe + data config
    code_version: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)  # why it failed/diverged
    # why it was pruned: nas.search.pruning.PruneReason as JSON (the rule's numbers at that epoch)
    prune_reason: Mapped[str | None] = mapped_column(Text, deferred=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EpochResult(Base):
    """The metrics of one epoch of one trial; epochs count from 0."""

    __tablename__ = "nas_epoch_results"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("nas_trials.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float] = mapped_column(Float)  # mean over the epoch's batches
    train_acc: Mapped[float] = mapped_column(Float)
    val_acc: Mapped[float | None] = mapped_column(Float)  # None when not evaluated
    test_acc: Mapped[float | None] = mapped_column(Float)
    # the images each accuracy was measured on (its binomial SE: nas.stats.binomial_se);
    # None when that accuracy was not measured, or in a store written before revision 0006
    val_images: Mapped[int | None] = mapped_column(Integer)
    test_images: Mapped[int | None] = mapped_column(Integer)
    # which images it got right, one bit each in the split's order (nas.stats.pack_correct);
    # None when not measured, not kept, or written before revision 0009
    val_correct: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    test_correct: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    epoch_seconds: Mapped[float] = mapped_column(Float)  # train wall s, excluding eval
    cumulative_seconds: Mapped[float] = mapped_column(Float)  # sum up to this epoch


class TrialWeights(Base):
    """The trained weights of one trial (a torch state_dict, saved with `torch.save`).

    Kept for the best confirm seed of each confirmed architecture, for `nas export`; in
    the database rather than beside it so a PostgreSQL store carries them to every reader.
    Load with ``torch.load(io.BytesIO(data), weights_only=True)``.
    """

    __tablename__ = "nas_trial_weights"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("nas_trials.id", ondelete="CASCADE"), primary_key=True
    )
    format: Mapped[str] = mapped_column(String(32))  # "torch-state-dict"
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AblationVariant(Base):
    """One variant of an ablation study: an architecture one change away from a reference.

    Written by `nas ablate` before its runs. The variant's results are the experiment's
    completed trials of `arch_hash` in phase ``ablation`` (or ``confirm``, when the search
    confirmed it too), paired by seed with the reference's trials in those phases.
    """

    __tablename__ = "nas_ablation_variants"

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("nas_experiments.id", ondelete="CASCADE"), primary_key=True
    )
    reference_hash: Mapped[str] = mapped_column(ForeignKey("nas_architectures.hash"), primary_key=True)
    arch_hash: Mapped[str] = mapped_column(ForeignKey("nas_architectures.hash"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64))  # the dotted ArchConfig key changed, e.g. "L1.residual"
    move: Mapped[str] = mapped_column(String(8))  # off (neutral value) | down | up (neighbouring value)
    change: Mapped[str] = mapped_column(String(200))  # for people, e.g. "L1.residual 1 -> 0 (off)"
    position: Mapped[int] = mapped_column(Integer)  # order in the plan, from 0
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # the study's planned looks (nas.sequential): tests at first_look..last_look paired seeds;
    # NULL (before 0008): one look at the seeds a variant has
    first_look: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_look: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ExitCurvePoint(Base):
    """One point of a trial's early-exit curve (BranchyNet, Teerapittayanon et al. 2016).

    At one threshold on the normalised softmax entropy (H / ln classes; a sample leaves at
    the first side exit below it), measured on one split after training: the accuracy, the
    mean inference FLOPs per image (up to and including the exit taken) and the share of
    images leaving at each exit. Written by the driver from the trial's last result.
    """

    __tablename__ = "nas_exit_curves"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("nas_trials.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # from 0, thresholds ascending
    threshold: Mapped[float] = mapped_column(Float)  # in [0, 1]; inf: every image leaves at the first exit
    split: Mapped[str] = mapped_column(String(8))  # val | test: the images measured
    accuracy: Mapped[float] = mapped_column(Float)  # fraction in [0, 1]
    mean_flops: Mapped[float] = mapped_column(Float)  # FLOPs per image, averaged over the images
    exit_shares: Mapped[str] = mapped_column(Text)  # JSON list of fractions: side exits in order, then the final


class WidthCurvePoint(Base):
    """One width of a universally slimmable trial (US-Nets: Yu & Huang, ICCV 2019).

    A trial trained with `recipe.slimmable` is evaluated after training at several width
    ratios of its architecture: the member at ratio r is the architecture with width x r
    (its params and FLOPs here), its weights the first channels of the trained net's, its
    BN statistics recomputed for it. Written by the driver from the trial's last result.
    """

    __tablename__ = "nas_width_curves"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("nas_trials.id", ondelete="CASCADE"), primary_key=True
    )
    width: Mapped[float] = mapped_column(Float, primary_key=True)  # ratio of the architecture's width, in (0, 1]
    params: Mapped[int] = mapped_column(BigInteger)  # of the member at this width
    flops: Mapped[int] = mapped_column(BigInteger)  # forward FLOPs per 32x32 image of that member
    val_acc: Mapped[float | None] = mapped_column(Float)  # None without a val split
    test_acc: Mapped[float | None] = mapped_column(Float)


class ExperimentLease(Base):
    """Who writes an experiment now: one process at a time (`nas.db.lease`).

    `nas launch` and `nas ablate` hold it while they run and renew `heartbeat_at` every few
    seconds; a second writer is refused, naming the holder. A row whose heartbeat stopped (a
    killed driver) is taken over by the next writer. Keyed by the experiment's name, so a
    brand-new experiment is leased before its row exists.
    """

    __tablename__ = "nas_experiment_leases"

    experiment: Mapped[str] = mapped_column(String(200), primary_key=True)  # nas_experiments.name
    token: Mapped[str] = mapped_column(String(32))  # random, one per holding process and lease
    host: Mapped[str] = mapped_column(String(255))  # socket.gethostname() of the holder
    pid: Mapped[int] = mapped_column(Integer)
    command: Mapped[str] = mapped_column(String(32))  # "nas launch" | "nas ablate"
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # the holder's clock
    # the host's boot and PID namespace the pid belongs to (nas.db.lease.process_space); None: unknown
    process_space: Mapped[str | None] = mapped_column(String(120), nullable=True)
