"""Architecture: one architecture of an experiment: config, stages, every seed's
learning curve with mean ± std, params/FLOPs, device and timing, and the export command."""

import json
import math

import pandas as pd
import streamlit as st
from nas.dashboard import figures, queries, trial_queries, ui

from nas.models import ArchConfig, stage_channels
from nas.stats import binomial_se, mean_binomial_se, summarize

st.title("Architecture")
engine, url = ui.connect()
experiment = ui.choose_experiment(engine, url)

choices = queries.arch_choices(engine, url, experiment)
if choices.empty:
    st.info(f"No trials in **{experiment}** yet.")
    st.stop()
names = dict(zip(choices["arch_hash"], choices["short_name"]))
arch_hash = ui.query_select("arch", "Architecture", list(names), format_func=lambda h: f"{names[h]}  ({h})")
arch = queries.architecture(engine, url, arch_hash)
runs = queries.arch_trials(engine, url, arch_hash, experiment)

st.header(arch["short_name"])
st.caption(f"hash `{arch_hash}` · experiment `{experiment}` · {len(runs)} trial(s)")

done = runs[runs["status"] == "completed"]
seed_phase = "confirm" if (done["phase"] == "confirm").any() else None
seeds = done[done["phase"] == seed_phase] if seed_phase else done
acc = summarize(seeds["accuracy"].dropna().tolist())
secs = summarize(seeds["train_seconds"].dropna().tolist())
devices = sorted(set(runs["device"].dropna()) - {""})
with st.container(horizontal=True, wrap=True):
    st.metric("Parameters", f"{arch['params'] / 1e6:.3f} M", border=True, width="content")
    st.metric("FLOPs per image", f"{arch['flops'] / 1e6:.1f} M", border=True, width="content")
    st.metric(f"Accuracy, mean ± std ({seed_phase or 'all phases'}, {ui.plural(acc.n, 'seed')})",
              ui.mean_pm(acc.mean, acc.std), border=True, width="content",
              help="over completed seeds" + (f"; 95% CI {ui.percent(acc.ci_low)} – {ui.percent(acc.ci_high)}"
                                             if acc.n > 1 else ""))
    st.metric("Train time per run, mean ± std", ui.mean_pm(secs.mean, secs.std, scale=1.0, unit=" s", digits=1),
              border=True, width="content", help="training wall time, excluding evaluation")
st.caption("Trained on " + (", ".join(devices) if devices else "an unrecorded device")
           + (f" · {secs.mean / max(1, int(seeds['epochs_done'].max())):.2f} s per epoch"
              if secs.n and not seeds.empty else ""))
# Evaluation noise beside seed noise: a decision is only as good as the noisier of the two.
eval_se = mean_binomial_se(list(zip(seeds["accuracy"], seeds["eval_images"])))
if math.isfinite(eval_se):  # known: the store records the images each accuracy was measured on
    images = int(pd.to_numeric(seeds["eval_images"]).min())
    st.caption(f"Evaluation noise: one seed's binomial SE ±{ui.percent(eval_se)} on {images:,} images "
               "(sqrt(p(1-p)/n), mean over the seeds)"
               + (f", beside a seed std of {ui.percent(acc.std)}" if acc.n > 1 else ""))

st.subheader("Export")
st.code(ui.export_command(experiment, arch_hash), language="bash")

st.subheader("Stages")
dims = trial_queries.arch_dimensions(arch["config_json"])
try:
    channels = stage_channels(ArchConfig.from_json(arch["config_json"]))
except Exception:  # a config this version cannot build
    channels = {}
rows = [{"stage": "prep", "channels": channels.get("prep", ""), "output (px)": "32×32", "layers": "conv-BN-ReLU"}]
for k, stage in enumerate(["L1", "L2", "L3"]):
    fields = {key.split(".", 1)[1]: value for key, value in dims.items() if key.startswith(f"{stage}.")}
    side = 32 >> (k + 1)
    parts = ["conv-BN-ReLU", "max-pool 2×2"]
    parts += [f"{fields.get('extra', 0)}× extra conv"] if fields.get("extra") else []
    parts += [f"{fields.get('residual', 0)}× residual block"] if fields.get("residual") else []
    parts += [f"{name}={value}" for name, value in fields.items()  # dimensions added later
              if name not in ("extra", "residual") and value not in (0, 0.0, False, None)]
    rows.append({"stage": stage, "channels": channels.get(stage, ""), "output (px)": f"{side}×{side}",
                 **{name: str(value) for name, value in fields.items()}, "layers": " → ".join(parts)})
rows.append({"stage": "head", "channels": "10 classes", "output (px)": "1×1",
             "layers": "global max-pool → linear to 10 classes (no bias) → logits ×0.125"})
stages = pd.DataFrame(rows)
stages = stages[[c for c in stages.columns if c != "layers"] + ["layers"]]  # the long text last
st.dataframe(stages.fillna("").astype(str), hide_index=True, key="arch_stages")

config_col, recipe_col = st.columns(2)
with config_col:
    st.markdown("**Config** (canonical JSON; fields at their default are left out)")
    st.json(json.loads(arch["config_json"]))
with recipe_col:
    recipes = runs["recipe_json"].dropna().unique().tolist()
    st.markdown("**Training recipe and data**" + (f" (of trial {int(runs['id'].iloc[0])}; "
                                                  f"{len(recipes)} different recipes)" if len(recipes) > 1 else ""))
    st.json(json.loads(recipes[0]) if recipes else {})

st.subheader("Learning curves")
metric = st.radio("Metric", ["val_acc", "test_acc", "train_loss", "train_acc"], horizontal=True,
                  key="arch_metric", format_func=lambda k: figures.CURVE_METRICS[k].title)
curves = queries.epochs(engine, url, tuple(runs["id"]))
band_ids = list(seeds["id"])
band = figures.mean_std_band(curves, band_ids, metric) if len(band_ids) > 1 else None
st.plotly_chart(figures.curves_figure(curves, runs, metric, band=band, color_by="seed"), key="arch_curves")
st.caption("Every seed of this architecture in this experiment; dotted: ablation runs; × where a "
           "trial stopped early."
           + (f" Band: mean ± std over the {len(band_ids)} completed {seed_phase or ''} seeds." if band is not None else ""))

st.subheader("Trials: device and timing")
table = runs.assign(
    accuracy=runs["accuracy"] * 100,
    eval_se=[binomial_se(a, n) * 100 for a, n in zip(runs["accuracy"], runs["eval_images"])],
    seconds_per_epoch=runs["train_seconds"] / runs["epochs_done"].where(runs["epochs_done"] > 0),
    epochs=runs["epochs_done"].astype(str) + " / " + runs["epochs_planned"].astype(str),
)
st.dataframe(
    table[["id", "phase", "seed", "status", "epochs", "accuracy", "eval_se", "eval_images", "train_seconds",
           "seconds_per_epoch",
           "device", "started_at", "finished_at", "code_version", "error"]],
    hide_index=True, key="arch_trials",
    column_config={
        "id": "Trial", "phase": "Phase", "seed": "Seed", "status": "Status", "epochs": "Epochs",
        "accuracy": st.column_config.NumberColumn("Accuracy (%)", format="%.2f"),
        "eval_se": st.column_config.NumberColumn("± SE (%)", format="%.2f", help="binomial SE sqrt(p(1-p)/n)"),
        "eval_images": st.column_config.NumberColumn("Eval images", format="%d"),
        "train_seconds": st.column_config.NumberColumn("Train time (s)", format="%.1f"),
        "seconds_per_epoch": st.column_config.NumberColumn("s / epoch", format="%.2f"),
        "device": "Device",
        "started_at": st.column_config.DatetimeColumn("Started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "finished_at": st.column_config.DatetimeColumn("Finished (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "code_version": "Code", "error": "Error",
    },
)

try:
    exit_config = ArchConfig.from_json(arch["config_json"]).exits
except Exception:  # a config this version cannot build
    exit_config = None
if exit_config is not None and exit_config.stages:
    # BranchyNet (Teerapittayanon et al. 2016): accuracy against inference cost across thresholds.
    st.subheader("Early exits")
    exit_curves = queries.exit_curves(engine, url, tuple(int(i) for i in runs["id"]))
    if exit_curves.empty:
        st.info("No early-exit curve recorded yet: a trial measures it after its last epoch, so "
                "completed trials of this architecture have one.")
        st.stop()
    measured = runs[runs["id"].isin(exit_curves["trial_id"])].sort_values(["accuracy", "id"], ascending=[False, True])
    trial_labels = {int(r.id): f"trial {r.id}: seed {r.seed} ({r.phase})" for r in measured.itertuples()}
    exit_trial = st.selectbox("Trial", list(trial_labels), format_func=trial_labels.get, key="arch_exit_trial",
                              help="the most accurate first")
    points = exit_curves[exit_curves["trial_id"] == exit_trial]
    operating = points[points["threshold"] == exit_config.threshold]
    if not operating.empty:
        at = operating.iloc[0]
        full = points.iloc[0]  # threshold 0: every image runs to the final exit
        with st.container(horizontal=True, wrap=True):
            st.metric(f"Mean inference FLOPs at threshold {exit_config.threshold:g}", f"{at['mean_flops'] / 1e6:.2f} M",
                      f"{at['mean_flops'] / full['mean_flops'] - 1:+.1%} vs every image to the final exit",
                      delta_color="inverse", border=True, width="content")
            st.metric(f"Accuracy at threshold {exit_config.threshold:g}", ui.percent(at["accuracy"]),
                      border=True, width="content")
    exit_names = [*exit_config.stages, "final"]
    st.plotly_chart(figures.exit_curve_figure(points, exit_config.threshold), key="arch_exit_curve")
    st.caption(f"Measured on the {points['split'].iloc[0]} images after training. An image leaves at the first "
               "side exit whose softmax entropy / ln 10 is below the threshold; threshold 0 sends every image "
               "to the final exit (the side heads included in its FLOPs), ∞ every image to the first exit. "
               f"The mean_inference_flops objective is the point at exits.threshold ({exit_config.threshold:g}).")
    st.plotly_chart(figures.exit_share_figure(points, exit_names), key="arch_exit_shares")

width_curves = queries.width_curves(engine, url, tuple(int(i) for i in runs["id"]))
if not width_curves.empty:
    # US-Nets (Yu & Huang 2019): one slimmable training answers "accuracy at width w" for any w;
    # beside it, the widths of this architecture trained on their own.
    from nas.models.width_slicing import width_member

    st.subheader("Slimmable widths")
    measured = runs[runs["id"].isin(width_curves["trial_id"])].sort_values(["accuracy", "id"], ascending=[False, True])
    trial_labels = {int(r.id): f"trial {r.id}: seed {r.seed} ({r.phase})" for r in measured.itertuples()}
    width_trial = st.selectbox("US-Net trial", list(trial_labels), format_func=trial_labels.get,
                               key="arch_width_trial", help="the most accurate first")
    every_experiment = st.toggle("Separately trained widths from every experiment", value=False,
                                 key="arch_width_every", help="off: this experiment's only (same recipe and data)")
    curve = width_curves[width_curves["trial_id"] == width_trial]
    separate = queries.width_siblings(engine, url, arch_hash, None if every_experiment else experiment)
    try:
        names = [width_member(ArchConfig.from_json(arch["config_json"]), w).short_name() for w in curve["width"]]
    except Exception:  # a config this version cannot build
        names = [f"{w:g} × {arch['short_name']}" for w in curve["width"]]
    st.plotly_chart(figures.width_curve_figure(curve, separate, names), key="arch_width_curve")
    split = "val" if curve["val_acc"].notna().all() else "test"
    st.caption(f"Accuracy ({split}) of the US-Net trained once: the net at width ratio r is the member with "
               "r × this width (the first channels of every layer), its BatchNorm statistics recomputed "
               "on training images after training. Diamonds: architectures that differ from this one only "
               f"in width, each trained on its own ({ui.plural(len(separate), 'completed trial')}).")
    st.dataframe(
        curve.assign(member=names, params=curve["params"] / 1e6, flops=curve["flops"] / 1e6,
                     val_acc=curve["val_acc"] * 100, test_acc=curve["test_acc"] * 100)[
            ["width", "member", "params", "flops", "val_acc", "test_acc"]],
        hide_index=True, key="arch_width_table",
        column_config={
            "width": st.column_config.NumberColumn("Width ratio", format="%g"), "member": "Member",
            "params": st.column_config.NumberColumn("Params (M)", format="%.3f"),
            "flops": st.column_config.NumberColumn("MFLOPs / image", format="%.2f"),
            "val_acc": st.column_config.NumberColumn("Val accuracy (%)", format="%.2f"),
            "test_acc": st.column_config.NumberColumn("Test accuracy (%)", format="%.2f"),
        },
    )
