"""Experiments: every experiment in the store with its status, trial counts, best
accuracy and compute; refreshes itself while one is running."""

import streamlit as st
from nas.dashboard import figures, queries, ui

st.title("Experiments")
engine, url = ui.connect()
table = queries.experiments(engine, url)
if table.empty:
    ui.empty_store()
    st.stop()
live = bool((table["status"] == "running").any())


@st.fragment(run_every=ui.REFRESH_S if live else None)
def overview() -> None:
    table = queries.experiments(engine, url)
    shown = table.assign(
        best_accuracy=table["best_accuracy"] * 100,
        compute_hours=table["compute_seconds"] / 3600,
        epochs=table["epochs_run"].astype(str) + " / " + table["epochs_planned"].astype(str),
    )
    st.dataframe(
        shown[["name", "status", "trials", "completed", "pruned", "failed", "running", "interrupted",
               "best_accuracy", "compute_hours", "epochs", "created_at", "finished_at", "last_trial_at"]],
        hide_index=True, key="experiments_table",
        column_config={
            "name": "Experiment",
            "status": "Status",
            "trials": st.column_config.NumberColumn("Trials", help="all phases"),
            "completed": "Completed", "pruned": "Pruned", "running": "Running",
            "interrupted": st.column_config.NumberColumn("Interrupted", help="the driver stopped; re-run them"),
            "failed": st.column_config.NumberColumn("Failed", help="failed or diverged"),
            "best_accuracy": st.column_config.NumberColumn(
                "Best accuracy (%)", format="%.2f", help="best completed trial, validation split"),
            "compute_hours": st.column_config.NumberColumn(
                "Compute (h)", format="%.3f", help="training wall time summed over trials, on their own devices"),
            "epochs": st.column_config.TextColumn("Epochs run / planned"),
            "created_at": st.column_config.DatetimeColumn("Started (UTC)", format="YYYY-MM-DD HH:mm"),
            "finished_at": st.column_config.DatetimeColumn("Ended (UTC)", format="YYYY-MM-DD HH:mm"),
            "last_trial_at": st.column_config.DatetimeColumn("Last trial start (UTC)", format="YYYY-MM-DD HH:mm"),
        },
    )
    running = table[table["status"] == "running"]
    if not running.empty:
        st.caption(f"{len(running)} experiment(s) running; this table re-reads the store every "
                   f"{ui.REFRESH_S} s.")
    st.plotly_chart(figures.experiments_figure(table), key="experiments_chart")


overview()

experiment = ui.choose_experiment(engine, url)
st.subheader(f"Go to {experiment}")
cols = st.columns(4)
for col, (page, label) in zip(cols, [("pareto", "Pareto front"), ("trials", "Trials"),
                                     ("insight", "Search insight"), ("ablations", "Ablations")]):
    col.page_link(ui.PAGES[page], label=label, query_params={"exp": experiment}, icon=":material/arrow_forward:")
