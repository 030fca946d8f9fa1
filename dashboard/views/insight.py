"""Search insight: which space dimensions mattered (Optuna's parameter importance on
the stored study), accuracy by each dimension, and the compute pruning saved."""

import streamlit as st
from nas.dashboard import figures, queries, search_insight, trial_queries, ui

st.title("Search insight")
engine, url = ui.connect()
experiment = ui.choose_experiment(engine, url)

st.subheader("Parameter importance")
evaluators = search_insight.importance_evaluators()
evaluator = st.radio("Evaluator", evaluators, horizontal=True, key="insight_evaluator") \
    if len(evaluators) > 1 else evaluators[0]
with st.spinner("Fitting parameter importance on the study..."):
    importance = search_insight.param_importances(url, experiment, evaluator)
if importance["error"]:
    st.info(f"Parameter importance is not available for **{experiment}**: {importance['error']} "
            "It needs the search's Optuna study (written by `nas launch`) with a few completed trials.")
else:
    st.plotly_chart(figures.importance_figure(importance["importances"]), key="insight_importance")
    st.caption(f"Optuna {evaluator} importance of each dimension for the accuracy objective, over "
               f"{importance['trials']} completed trials of the study `{experiment}`.")

st.subheader("Accuracy by search dimension")
archs = trial_queries.experiment_archs(engine, url, experiment)
keys = trial_queries.searched_keys(queries.experiment_config(engine, url, experiment), archs) if not archs.empty else []
completed = trial_queries.completed_accuracies(engine, url, experiment, "search")
completed = completed.merge(archs[["arch_hash", *keys]], on="arch_hash", how="left") if keys else completed
if completed.empty or not keys:
    st.info("No completed search trials with varying dimensions yet.")
else:
    st.plotly_chart(figures.dimension_figure(completed, keys), key="insight_dimensions")
    st.caption(f"{len(completed):,} completed search trials; one box per value of each dimension, "
               + ("every trial a point." if len(completed) <= figures.WEBGL_ABOVE else
                  "whiskers at the furthest trials within 1.5 IQR (points are drawn up to "
                  f"{figures.WEBGL_ABOVE:,} trials)."))

st.subheader("Compute saved by pruning")
savings = queries.pruning_savings(engine, url, experiment)
if savings.empty:
    st.info("No finished search trials yet.")
else:
    share = queries.pruning_share(savings)
    m = st.columns(3)
    m[0].metric("Epochs run / planned", f"{share['epochs_run']:.0f} / {share['epochs_planned']:.0f}",
                help="finished search trials (completed, pruned, failed, diverged)")
    m[1].metric("Planned epochs pruning skipped", ui.percent(share["epoch_share_saved"], 1),
                help=f"{share['epochs_saved']:.0f} epochs of pruned trials not run")
    m[2].metric("Training time saved (estimate)", ui.duration(share["seconds_saved"]),
                delta=f"{share['second_share_saved'] * 100:.1f}% of the search's compute", delta_color="off", delta_arrow="off",
                help="each pruned trial's mean epoch time x its epochs not run")
    st.plotly_chart(figures.pruning_figure(savings), key="insight_pruning")

st.subheader("Is pruning safe?")
correlation = search_insight.curve_rank_correlation(queries.open_store(url), url, experiment)
if correlation["rho"].isna().all():
    st.info("Needs at least 3 completed search trials.")
else:
    shown = correlation.assign(epoch=correlation["epoch"] + 1)
    st.dataframe(shown, hide_index=True, key="insight_rank_correlation", column_config={
        "epoch": "Epoch", "trials": "Completed trials",
        "rho": st.column_config.NumberColumn("Spearman rho", format="%+.2f"),
        "ci_low": st.column_config.NumberColumn("95% CI low", format="%+.2f"),
        "ci_high": st.column_config.NumberColumn("95% CI high", format="%+.2f"),
    })
    st.caption("How each epoch's pruned metric ranks the completed search trials by their final accuracy "
               "(95% CI: bootstrap over the trials, Fisher z above 500 of them). Pruning at an epoch whose "
               "interval is wide or reaches 0 stops trials on noise; the pruner never decides before the LR "
               "warm-up has ended.")
