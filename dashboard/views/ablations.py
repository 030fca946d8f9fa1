"""Ablations: each component's contribution to the winner, from `nas ablate`'s
leave-one-component-out runs (phase ``ablation``); until there are any, how to run one."""

import streamlit as st

from nas.dashboard import figures, queries, ui

st.title("Ablations")
engine, url = ui.connect()
experiment = ui.choose_experiment(engine, url)
variants = queries.seed_summary(engine, url, experiment, "ablation")
if variants.empty:
    st.info(f"**No ablation results for {experiment} yet.** An ablation re-trains the winner and, on "
            "the same seeds, every variant with one component removed, so each component's "
            "contribution comes with a confidence interval. Run:")
    st.code(f"nas ablate {experiment}", language="bash")
    st.caption("`nas ablate` is the next step after `nas launch`; this page renders its contribution "
               "table as soon as the store holds ablation-phase trials.")
    st.stop()

# Baseline: the confirmed winner (best confirm-phase mean) as measured in the ablation runs.
confirmed = queries.seed_summary(engine, url, experiment, "confirm")
winner = confirmed.sort_values("accuracy", ascending=False)["arch_hash"].iloc[0] if not confirmed.empty else None
if winner not in set(variants["arch_hash"]):
    winner = variants.sort_values("accuracy", ascending=False)["arch_hash"].iloc[0]
baseline = variants.set_index("arch_hash").loc[winner]
table = variants.assign(delta=variants["accuracy"] - baseline["accuracy"]).sort_values("delta")
st.caption(f"Baseline: **{baseline['short_name']}** (`{winner}`), {ui.mean_pm(baseline['accuracy'], baseline['accuracy_std'])} "
           f"over {int(baseline['seeds'])} seeds. Error bars: 95% CI of each variant's mean.")
st.plotly_chart(figures.ablation_figure(table[table["arch_hash"] != winner]), key="ablation_chart")
st.dataframe(
    table.assign(accuracy=table["accuracy"] * 100, delta=table["delta"] * 100,
                 ci=[f"{ui.percent(lo)} – {ui.percent(hi)}" for lo, hi in
                     zip(table["accuracy_ci_low"], table["accuracy_ci_high"])])[
        ["short_name", "arch_hash", "seeds", "accuracy", "ci", "delta", "train_seconds"]],
    hide_index=True, key="ablation_table",
    column_config={
        "short_name": "Variant", "arch_hash": "Hash", "seeds": "Seeds",
        "accuracy": st.column_config.NumberColumn("Accuracy (%)", format="%.2f"),
        "ci": "95% CI",
        "delta": st.column_config.NumberColumn("Change vs baseline (pp)", format="%+.2f"),
        "train_seconds": st.column_config.NumberColumn("Train time (s)", format="%.1f"),
    },
)
