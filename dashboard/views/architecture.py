"""Architecture: one architecture of an experiment: config, stages, every seed's
learning curve with mean ± std, params/FLOPs, device and timing, and the export command."""

import json

import pandas as pd
import streamlit as st

from nas.dashboard import figures, queries, ui
from nas.models import ArchConfig, stage_channels
from nas.stats import summarize

st.title("Architecture")
engine, url = ui.connect()
experiment = ui.choose_experiment(engine, url)

summary = queries.arch_summary(engine, url, experiment, None)
tried = queries.trials(engine, url, experiment)
if tried.empty:
    st.info(f"No trials in **{experiment}** yet.")
    st.stop()
# Every architecture the experiment tried: completed ones by mean accuracy, then the rest.
order = list(summary.sort_values("accuracy", ascending=False)["arch_hash"])
order += [h for h in dict.fromkeys(tried["arch_hash"]) if h not in order]
names = dict(zip(tried["arch_hash"], tried["short_name"]))
arch_hash = ui.query_select("arch", "Architecture", order, format_func=lambda h: f"{names[h]}  ({h})")
arch = queries.architecture(engine, url, arch_hash)
runs = queries.arch_trials(engine, url, arch_hash, experiment)

st.header(arch["short_name"])
st.caption(f"hash `{arch_hash}` · experiment `{experiment}` · {len(runs)} trial(s)")

done = runs[runs["status"] == "completed"]
seed_phase = "confirm" if (done["phase"] == "confirm").any() else None
seeds = done[done["phase"] == seed_phase] if seed_phase else done
acc = summarize(seeds["accuracy"].dropna().tolist())
secs = summarize(seeds["train_seconds"].dropna().tolist())
m = st.columns(5)
m[0].metric("Parameters", f"{arch['params'] / 1e6:.3f} M")
m[1].metric("FLOPs per image", f"{arch['flops'] / 1e6:.1f} MFLOPs")
m[2].metric(f"Accuracy ({seed_phase or 'all phases'}, {acc.n} seeds)", ui.mean_pm(acc.mean, acc.std),
            help="mean ± sample std over completed seeds"
                 + (f"; 95% CI {ui.percent(acc.ci_low)} – {ui.percent(acc.ci_high)}" if acc.n > 1 else ""))
m[3].metric("Train time per run", ui.mean_pm(secs.mean, secs.std, scale=1.0, unit=" s", digits=1))
devices = sorted(set(runs["device"].dropna()) - {""})
m[4].metric("Device", devices[0] if len(devices) == 1 else f"{len(devices)} devices" if devices else "-",
            help=", ".join(devices) or None)

st.subheader("Export")
st.code(ui.export_command(experiment, arch_hash), language="bash")

config_col, stage_col = st.columns([1, 2])
config = json.loads(arch["config_json"])
with config_col:
    st.markdown("**Config** (canonical; fields at their default are left out)")
    st.json(config)
with stage_col:
    st.markdown("**Stages**")
    dims = queries.arch_dimensions(arch["config_json"])
    try:
        channels = stage_channels(ArchConfig.from_json(arch["config_json"]))
    except Exception:  # a config this version cannot build
        channels = {}
    rows = [{"stage": "prep", "channels": channels.get("prep"), "output (px)": "32×32",
             "layers": "conv-BN-ReLU"}]
    for k, stage in enumerate(["L1", "L2", "L3"]):
        fields = {key.split(".", 1)[1]: value for key, value in dims.items() if key.startswith(f"{stage}.")}
        side = 32 >> (k + 1)
        parts = ["conv-BN-ReLU", "max-pool 2×2"]
        parts += [f"{fields.get('extra', 0)}× extra conv"] if fields.get("extra") else []
        parts += [f"{fields.get('residual', 0)}× residual block"] if fields.get("residual") else []
        rows.append({"stage": stage, "channels": channels.get(stage), "output (px)": f"{side}×{side}",
                     "layers": " → ".join(parts), **{k2: v for k2, v in fields.items()}})
    rows.append({"stage": "head", "channels": None, "output (px)": "1×1",
                 "layers": "global max-pool → linear to 10 classes (no bias) → logits ×0.125"})
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="arch_stages")

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
    seconds_per_epoch=runs["train_seconds"] / runs["epochs_done"].where(runs["epochs_done"] > 0),
    epochs=runs["epochs_done"].astype(str) + " / " + runs["epochs_planned"].astype(str),
)
st.dataframe(
    table[["id", "phase", "seed", "status", "epochs", "accuracy", "train_seconds", "seconds_per_epoch",
           "device", "started_at", "finished_at", "code_version", "error"]],
    hide_index=True, key="arch_trials",
    column_config={
        "id": "Trial", "phase": "Phase", "seed": "Seed", "status": "Status", "epochs": "Epochs",
        "accuracy": st.column_config.NumberColumn("Accuracy (%)", format="%.2f"),
        "train_seconds": st.column_config.NumberColumn("Train time (s)", format="%.1f"),
        "seconds_per_epoch": st.column_config.NumberColumn("s / epoch", format="%.2f"),
        "device": "Device",
        "started_at": st.column_config.DatetimeColumn("Started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "finished_at": st.column_config.DatetimeColumn("Finished (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "code_version": "Code", "error": "Error",
    },
)
