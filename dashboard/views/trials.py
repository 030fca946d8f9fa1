"""Trials: every trial of an experiment in a filterable table (status, phase, any space
key), and their learning curves overlaid with pruned trials marked where they stopped."""

import streamlit as st
from nas.dashboard import figures, queries, ui

from nas.stats import binomial_se

st.title("Trials")
engine, url = ui.connect()
experiment = ui.choose_experiment(engine, url)
table = queries.trials(engine, url, experiment)
if table.empty:
    st.info(f"No trials in **{experiment}** yet; they appear here as the search starts them.")
    st.stop()
keys = queries.searched_keys(queries.experiment_config(engine, url, experiment), table)

status_col, phase_col = st.columns(2)
statuses = status_col.multiselect("Status", sorted(table["status"].unique()), key="trials_status",
                                  placeholder="all statuses")
phases = phase_col.multiselect("Phase", sorted(table["phase"].unique()), key="trials_phase",
                               placeholder="all phases")
chosen: dict[str, list] = {}
with st.expander("Filter by search-space key", expanded=False):
    key_cols = st.columns(min(3, max(1, len(keys))))
    for i, key in enumerate(keys):
        values = sorted(table[key].dropna().unique().tolist())
        chosen[key] = key_cols[i % len(key_cols)].multiselect(key, values, key=f"trials_key_{key}",
                                                              placeholder="any")
shown = table
if statuses:
    shown = shown[shown["status"].isin(statuses)]
if phases:
    shown = shown[shown["phase"].isin(phases)]
for key, values in chosen.items():
    if values:
        shown = shown[shown[key].isin(values)]

st.caption(f"{len(shown)} of {len(table)} trials. Select a row to open its architecture.")
display = shown.assign(
    accuracy=shown["accuracy"] * 100,
    # evaluation noise: one trial's binomial SE on the images its accuracy was measured on
    eval_se=[binomial_se(a, n) * 100 for a, n in zip(shown["accuracy"], shown["eval_images"])],
    epochs=shown["epochs_done"].astype(str) + " / " + shown["epochs_planned"].astype(str),
)
event = st.dataframe(
    display[["id", "short_name", "arch_hash", "seed", "phase", "status", "epochs", "accuracy", "eval_se",
             "eval_images", "train_seconds", *keys, "device", "started_at", "error"]],
    hide_index=True, key="trials_table", on_select="rerun", selection_mode="single-row",
    column_config={
        "id": "Trial", "short_name": "Architecture", "arch_hash": "Hash", "seed": "Seed",
        "phase": "Phase", "status": "Status", "epochs": "Epochs run / planned",
        "accuracy": st.column_config.NumberColumn("Accuracy (%)", format="%.2f"),
        "eval_se": st.column_config.NumberColumn("± SE (%)", format="%.2f",
                                                 help="binomial standard error sqrt(p(1-p)/n) of the accuracy"),
        "eval_images": st.column_config.NumberColumn("Eval images", format="%d",
                                                     help="the val images (test without a val split) it was measured on"),
        "train_seconds": st.column_config.NumberColumn("Train time (s)", format="%.1f"),
        "device": "Device",
        "started_at": st.column_config.DatetimeColumn("Started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "error": "Error",
    },
)
rows = event.selection.rows if event is not None else []
if rows:
    ui.open_architecture(experiment, str(shown.iloc[rows[0]]["arch_hash"]))

st.subheader("Learning curves")
metric = st.radio("Metric", ["val_acc", "test_acc", "train_loss", "cumulative_seconds"], horizontal=True,
                  key="trials_metric", format_func=lambda k: figures.CURVE_METRICS[k].title)
drawn = shown.tail(queries.MAX_CURVES)
if len(shown) > len(drawn):
    st.caption(f"Drawing the latest {len(drawn)} of {len(shown)} matching trials; filter to see others.")
curves = queries.epochs(engine, url, tuple(int(i) for i in drawn["id"]))
st.plotly_chart(figures.curves_figure(curves, drawn, metric), key="trials_curves")
st.caption("Colour: status. × marks where a pruned, failed or diverged trial stopped.")
