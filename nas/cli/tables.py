"""The tables the commands print (rich), each from the data it shows."""

from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table

from nas.cli.common import console, mask_url
from nas.db.schema import Phase, TrialStatus
from nas.trials.plan import judged_accuracy


def print_front(store, experiment: str) -> None:
    from nas.results import arch_results, objectives_of
    from nas.stats import FRONT_DRAWS

    rows = arch_results(store, experiment, Phase.CONFIRM) or arch_results(store, experiment, Phase.SEARCH)
    if not rows:
        console.print("no completed trials yet")
        return
    phase = rows[0].phase
    # early exits: FLOPs per image at the exit threshold, when the search optimises them
    exits = "mean_inference_flops" in [metric for metric, _ in objectives_of(store, experiment)]
    # confirm (and a search with seed repeats): the decision first (#: the --rank of `nas export`
    # for confirm), the Pareto rank beside it, since an architecture not separated from the best
    # may be the cheaper one
    decided = any(row.group for row in rows)
    sure = any(math.isfinite(row.front_share) for row in rows)  # seeds enough to bootstrap the front
    order = "best, not separated, worse; Pareto front first within each" if decided else "Pareto front first"
    table = Table(title=f"{experiment}: {phase} results ({order})", caption=(
        "decision: every pair on the same seeds (paired t), the chance of any false 'worse' over all "
        "pairs and rounds held at 0.05; worse: p < 0.05; not separated: with the difference the seeds "
        "could detect at 80% power."
        + (f" rank: the Pareto front, 1 the first; 1 (0.93): on the first in 93% of {FRONT_DRAWS} seed "
           "bootstraps." if sure else "")
        + (" #: nas export --rank." if phase == Phase.CONFIRM else "") if decided else None))
    columns = (("#", "decision") if decided else ()) + (
        "rank", "architecture", "hash", "seeds", "accuracy (mean ± 95% CI)", "train s", "params", "MFLOPs")
    columns += ("inference MFLOPs",) if exits else ()
    columns += ("eval SE",)  # one trial's binomial SE of its accuracy, with the images it was measured on
    for column in columns:
        table.add_column(column, justify="left" if column in ("decision", "architecture", "hash") else "right",
                         no_wrap=column == "decision")
    for position, row in enumerate(rows, start=1):
        acc = row.accuracy
        ci = "" if acc.n < 2 else f" ± {acc.half_width:.2%}"
        table.add_row(
            *((str(position), row.decision or "-") if decided else ()),
            _rank(row.pareto_front, row.front_share), escape(row.short_name), row.arch_hash, str(row.seeds),
            f"{acc.mean:.2%}{ci}", f"{row.train_seconds.mean:.1f}", f"{row.params / 1e6:.2f}M", f"{row.flops / 1e6:.1f}",
            *((f"{row.mean_inference_flops / 1e6:.2f}",) if exits else ()),
            _eval_se(row.eval_se, row.eval_images),
        )
    console.print(table)
    if decided:
        print_image_differences(store, experiment, rows)


def print_image_differences(store, experiment: str, rows) -> None:
    """Each decided architecture against the best on new images: the seeds' and the images' noise."""
    from nas.results import image_differences

    found = image_differences(store, experiment, rows)
    if not found:
        return
    table = Table(title=f"against the best ({escape(rows[0].short_name)}), generalised to new images",
                  caption="Δ: mean over the paired seeds and the same images; the seeds' 95% CI is the paired "
                          "t's (these images only); 'new images' adds the image sample's noise (two-way "
                          "seeds x images, nas.stats.image_difference; its degrees of freedom pool both, "
                          "Satterthwaite); images: its share of the variance.")
    for column in ("architecture", "seeds", "images", "Δ acc (pp)", "95% CI, seeds (pp)", "95% CI, new images (pp)",
                   "images"):
        table.add_column(column, justify="left" if column == "architecture" else "right")
    for row in rows[1:]:
        d = found.get(row.arch_hash)
        if d is None:
            continue
        seeds_low, seeds_high = d.seed_interval()
        table.add_row(escape(row.short_name), str(d.seeds), f"{d.images:,}", f"{d.mean * 100:+.2f}",
                      "-" if math.isnan(seeds_low) else f"[{seeds_low * 100:+.2f}, {seeds_high * 100:+.2f}]",
                      f"[{d.ci_low * 100:+.2f}, {d.ci_high * 100:+.2f}]",
                      "-" if math.isnan(d.image_share) else f"{d.image_share:.0%}")
    console.print(table)


def _rank(front: int, front_share: float) -> str:
    """The Pareto front, from 1 (``1`` the front, ``2`` the next, ...; "front" for the first and
    "1" for the second read alike); with the share of seed bootstraps on the front: ``1 (0.93)``."""
    return f"{front} ({front_share:.2f})" if math.isfinite(front_share) else str(front)


def print_frame(frame, title: str) -> None:
    """Any results frame (`nas.frames`) as a table: its columns, missing values as ``-``."""
    import pandas as pd

    table = Table(title=escape(title))
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column]) and not pd.api.types.is_bool_dtype(frame[column])
        table.add_column(escape(str(column)), justify="right" if numeric else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(escape(_cell(value)) for value in row))
    console.print(table)
    if frame.empty:
        console.print("no rows yet")


def _cell(value) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, (str, bool)) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, pd.Timestamp):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value)


def print_experiments(store) -> None:
    table = Table(title="experiments")
    for column in ("name", "status", "trials", "completed", "pruned", "failed", "best accuracy", "started"):
        table.add_column(column)
    for exp in store.experiments():
        trials = store.trials(experiment_id=exp.id)
        by_status = {s: sum(1 for t in trials if t.status == s)
                     for s in (TrialStatus.COMPLETED, TrialStatus.PRUNED, TrialStatus.FAILED)}
        accs = [judged_accuracy(t.final_val_acc, t.final_test_acc)
                for t in trials if t.status == TrialStatus.COMPLETED]
        accs = [a for a in accs if a is not None]
        table.add_row(
            escape(exp.name), str(exp.status), str(len(trials)), str(by_status[TrialStatus.COMPLETED]),
            str(by_status[TrialStatus.PRUNED]), str(by_status[TrialStatus.FAILED]), f"{max(accs):.2%}" if accs else "-",
            f"{exp.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


def print_summary(trial_id, arch_cfg, result, params, flops, db_url) -> None:
    final = result.final
    table = Table(title=f"trial {trial_id}: {arch_cfg.short_name()}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("architecture", f"{arch_cfg.short_name()}  (hash {arch_cfg.hash})"),
        ("status", result.status),
        ("epochs", str(len(result.epochs))),
        ("val accuracy", _with_se(final.val_acc, final.val_images)),
        ("test accuracy", _with_se(final.test_acc, final.test_images)),
        ("train seconds", f"{result.train_seconds:.1f} (evaluation excluded)"),
        ("params", f"{params:,}"),
        ("FLOPs / image", f"{flops:,}"),
        ("device", result.device),
        ("store", mask_url(db_url)),
    ]
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


def _eval_se(se: float, images: int | None) -> str:
    """``±1.57% (1,000)``: a trial's binomial SE and the images it was measured on."""
    if math.isnan(se):
        return "-"
    return f"±{se:.2%}" + ("" if images is None else f" ({images:,})")


def _with_se(acc: float | None, images: int | None) -> str:
    """``54.56% ± 0.70% (SE, 5,000 images)``; the accuracy alone when the images are unknown."""
    from nas.stats import binomial_se

    if acc is None:
        return "-"
    se = binomial_se(acc, images)
    return f"{acc:.2%}" if math.isnan(se) else f"{acc:.2%} ± {se:.2%} (SE, {images:,} images)"


def print_exit_curve(arch_cfg, curve) -> None:
    """The early-exit curve: accuracy, mean MFLOPs per image and exit shares per threshold."""
    names = [*arch_cfg.exits.stages, "final"]
    table = Table(title=f"early exits ({curve.split} images): an image leaves at the first side exit "
                        "whose softmax entropy / ln(10) is below the threshold")
    for column in ("threshold", "accuracy", "MFLOPs / image", *(f"exit {n}" for n in names)):
        table.add_column(column, justify="right")
    previous = None
    for p in curve.points:
        mark = " *" if p.threshold == arch_cfg.exits.threshold else ""
        same = previous is not None and (p.accuracy, p.mean_flops, p.exit_shares) == previous
        previous = (p.accuracy, p.mean_flops, p.exit_shares)
        if same and not mark:
            continue  # a threshold between the same images' entropies: the row above again
        table.add_row(f"{p.threshold:.4g}{mark}", f"{p.accuracy:.2%}", f"{p.mean_flops / 1e6:.2f}",
                      *(f"{share:.1%}" for share in p.exit_shares))
    console.print(table)
    console.print("* the architecture's threshold (exits.threshold): its mean_inference_flops objective; "
                  "thresholds that change nothing from the row above are left out")


def print_width_curve(arch_cfg, slimmable, curve) -> None:
    """A US-Net's accuracy, params and FLOPs per width ratio, each width its family member."""
    from nas.models.width_slicing import width_member

    table = Table(title=f"universally slimmable {arch_cfg.short_name()}: one training, every width "
                        f"(ratios {slimmable.min_width:g}-{slimmable.max_width:g} of its width, "
                        f"{slimmable.samples} per step; BN statistics recomputed per width)")
    for column in ("width ratio", "member", "params", "MFLOPs / image", "val acc", "test acc"):
        table.add_column(column, justify="left" if column == "member" else "right")
    for p in curve.points:
        table.add_row(f"{p.width:g}", escape(width_member(arch_cfg, p.width).short_name()), f"{p.params:,}",
                      f"{p.flops / 1e6:.2f}", "-" if p.val_acc is None else f"{p.val_acc:.2%}",
                      f"{p.test_acc:.2%}")
    console.print(table)


def print_plan(store, experiment, reference, variants, seeds) -> None:
    from nas.ablation.run import missing_runs
    from nas.trials.costs import count_costs

    experiment_id = store.get_experiment(experiment).id

    def to_run(arch) -> int:
        return len(missing_runs(store, experiment_id, [arch], seeds))

    ref_params, ref_flops = count_costs(reference)
    table = Table(title=f"ablation plan: {reference.short_name()} ({reference.hash}) in {experiment}, "
                        f"seeds {seeds[0]}..{seeds[-1]}")
    for column in ("#", "change", "move", "variant", "hash", "params", "MFLOPs", "runs"):
        table.add_column(column, justify="right" if column in ("#", "params", "MFLOPs", "runs") else "left")
    table.add_row("ref", "-", "-", escape(reference.short_name()), reference.hash, f"{ref_params:,}",
                  f"{ref_flops / 1e6:.1f}", str(to_run(reference)))
    total = to_run(reference)
    for i, variant in enumerate(variants, start=1):
        params, flops = count_costs(variant.arch)
        runs = to_run(variant.arch)
        total += runs
        table.add_row(str(i), escape(variant.change), variant.move, escape(variant.arch.short_name()),
                      variant.arch.hash, f"{params:,}", f"{flops / 1e6:.1f}", str(runs))
    console.print(table)
    console.print(f"{len(variants)} variants x {len(seeds)} paired seeds: {total} runs to do")


def print_contributions(report) -> None:
    acc = report.reference_accuracy
    ci = "" if acc.n < 2 else f" ± {acc.half_width:.2%}"
    table = Table(
        title=f"{report.experiment}: contributions to {report.reference_name} ({report.reference_hash}), "
              f"accuracy {acc.mean:.2%}{ci} over {acc.n} seeds",
        caption="Δ = variant - reference on the same seeds; 95% CI paired over seeds; p: paired t-test; "
                "study p: over every variant and round (the chance of any false 'matters' held at 0.05); "
                "matters: study p < 0.05.",
    )
    for column in ("change", "variant", "seeds", "Δ acc (pp)", "95% CI (pp)", "p", "study p", "matters",
                   "Δ train s", "Δ params", "Δ MFLOPs"):
        table.add_column(column, justify="left" if column in ("change", "variant", "matters") else "right")
    ref_seconds = report.reference_seconds.mean
    for row in report.rows:
        d = row.accuracy
        ci_text = "-" if d.n < 2 else f"[{d.ci_low * 100:+.2f}, {d.ci_high * 100:+.2f}]"
        seconds = "-" if math.isnan(row.train_seconds) else f"{row.train_seconds:+.1f}"
        if seconds != "-" and ref_seconds and not math.isnan(ref_seconds):
            seconds += f" ({row.train_seconds / ref_seconds:+.0%})"
        table.add_row(
            escape(row.change), escape(row.short_name), str(d.n),
            "-" if math.isnan(d.mean) else f"{d.mean * 100:+.2f}", ci_text, _p(d.p_value), _p(row.p),
            "yes" if row.matters else "", seconds, f"{row.params:+,}", f"{row.flops / 1e6:+.1f}",
        )
    console.print(table)


def _p(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


PRUNED_SHOWN = 10  # the latest pruned trials `nas status` explains


def print_pruned(store, experiment_id: int) -> None:
    """The latest pruned search trials and why the rule stopped each (nas.search.pruning)."""
    from nas.results import pruned_trials

    pruned = pruned_trials(store, experiment_id)
    if not pruned:
        return
    shown = pruned[-PRUNED_SHOWN:]
    table = Table(title=f"why pruned ({len(shown)} latest of {len(pruned)} pruned search trials)",
                  caption="stopped only when below the pruner's threshold by more than t x the seeds' pooled "
                          "spread (its one-sided tail: Phi(-margin)), at an epoch whose curve ranks the finished trials")
    for column, justify in (("trial", "right"), ("architecture", "left"), ("seed", "right"), ("why", "left")):
        table.add_column(column, justify=justify)
    for row in shown:
        why = row.reason.text() if row.reason is not None else "(stored before reasons were kept)"
        table.add_row(str(row.trial_id), escape(row.short_name), str(row.seed), escape(why))
    console.print(table)


def print_rank_correlation(store, experiment: str, experiment_id: int) -> None:
    """Per epoch, how the pruned metric ranks the completed search trials' final accuracy:
    from which epoch pruning stops on signal rather than noise."""
    from nas.results import accuracy_objective
    from nas.search.curve_ranks import curve_rank_correlation

    metric = accuracy_objective(store, experiment)
    rows = curve_rank_correlation(store, experiment_id, metric)
    if not rows or all(math.isnan(r.rho) for r in rows):
        return
    table = Table(title=f"is pruning safe? Spearman rank correlation of each epoch's {metric} with the final "
                        "accuracy, completed search trials",
                  caption="95% CI: bootstrap over the trials (Fisher z above 500 of them); pruning at an epoch "
                          "whose CI is wide or reaches 0 stops trials on noise.")
    for column in ("epoch", "trials", "rho", "95% CI"):
        table.add_column(column, justify="right")
    for row in rows:
        ci = "-" if math.isnan(row.ci_low) else f"[{row.ci_low:+.2f}, {row.ci_high:+.2f}]"
        table.add_row(str(row.epoch + 1), str(row.trials), "-" if math.isnan(row.rho) else f"{row.rho:+.2f}", ci)
    console.print(table)
