"""Trials: the trials of an experiment in a filterable, sortable table (status, phase, any
space key; the first `MAX_TABLE_ROWS` that match, with how many match), and the latest
matching trials' learning curves overlaid with pruned trials marked where they stopped."""

import streamlit as st
from nas.dashboard import figures, queries, trial_queries, ui

from nas.search.pruning import PruneReason
from nas.stats import binomial_se

st.title("Trials")
engine, url = ui.connect()
experiment = ui.choose_experiment(engine, url)
counts = queries.phase_counts(engine, url, experiment)
if counts.empty:
    st.info(f"No trials in **{experiment}** yet; they appear here as the search starts them.")
    st.stop()
archs = trial_queries.experiment_archs(engine, url, experiment)
keys = trial_queries.searched_keys(queries.experiment_config(engine, url, experiment), archs)

status_col, phase_col, order_col = st.columns(3)
statuses = status_col.multiselect("Status", sorted(counts["status"].unique()), key="trials_status",
                                  placeholder="all statuses")
phases = phase_col.multiselect("Phase", sorted(counts["phase"].unique()), key="trials_phase",
                               placeholder="all phases")
order = order_col.selectbox("Order", list(trial_queries.TABLE_ORDERS), key="trials_order",
                            help="applied to every matching trial before the table's first rows are taken")
chosen: dict[str, list] = {}
with st.expander("Filter by search-space key", expanded=False):
    key_cols = st.columns(min(3, max(1, len(keys))))
    for i, key in enumerate(keys):
        values = sorted(archs[key].dropna().unique().tolist())
        chosen[key] = key_cols[i % len(key_cols)].multiselect(key, values, key=f"trials_key_{key}",
                                                              placeholder="any")
# Filters, order and row limit run in SQL: a page costs the same at 100 trials or 100,000.
filters = (tuple(statuses), tuple(phases), trial_queries.matching_archs(archs, chosen))
matching = trial_queries.count_trials(engine, url, experiment, *filters)
shown = trial_queries.trial_rows(engine, url, experiment, *filters, order=order, limit=trial_queries.MAX_TABLE_ROWS)
shown = shown.merge(archs[["arch_hash", *keys]], on="arch_hash", how="left")

st.caption(f"{matching:,} of {int(counts['trials'].sum()):,} trials match"
           + (f"; the table shows the first {len(shown):,} ({order}): filter or change the order to see others"
              if matching > len(shown) else "")
           + ". Select a row to open its architecture.")
display = shown.assign(
    accuracy=shown["accuracy"] * 100,
    # evaluation noise: one trial's binomial SE on the images its accuracy was measured on
    eval_se=[binomial_se(a, n) * 100 for a, n in zip(shown["accuracy"], shown["eval_images"])],
    epochs=shown["epochs_done"].astype(str) + " / " + shown["epochs_planned"].astype(str),
    # why the pruning rule stopped it (nas.search.pruning): the threshold, the seed noise, the rank gate
    why_pruned=[reason.text() if (reason := PruneReason.from_json(text)) else "" for text in shown["prune_reason"]],
)
event = st.dataframe(
    display[["id", "short_name", "arch_hash", "seed", "phase", "status", "epochs", "accuracy", "eval_se",
             "eval_images", "train_seconds", *keys, "device", "started_at", "why_pruned", "error"]],
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
        "why_pruned": st.column_config.TextColumn(
            "Why pruned", help="the epoch, its value, the pruner's threshold, the seed noise and the gap it had to "
                               "exceed, the rank gate's state"),
        "error": "Error",
    },
)
rows = event.selection.rows if event is not None else []
if rows:
    ui.open_architecture(experiment, str(shown.iloc[rows[0]]["arch_hash"]))

st.subheader("Learning curves")
metric = st.radio("Metric", ["val_acc", "test_acc", "train_loss", "cumulative_seconds"], horizontal=True,
                  key="trials_metric", format_func=lambda k: figures.CURVE_METRICS[k].title)
drawn = trial_queries.trial_rows(engine, url, experiment, *filters, order="latest first",
                                 limit=queries.MAX_CURVES).sort_values("id", ignore_index=True)
if matching > len(drawn):
    st.caption(f"Drawing the latest {len(drawn)} of {matching:,} matching trials; filter to see others.")
curves = queries.epochs(engine, url, tuple(int(i) for i in drawn["id"]))
st.plotly_chart(figures.curves_figure(curves, drawn, metric), key="trials_curves")
st.caption("Colour: status. × marks where a pruned, failed or diverged trial stopped.")
