"""Ablations: which components of an architecture matter, from `nas ablate`'s
leave-one-component-out runs: each variant's accuracy change against the reference,
paired by seed, with its 95% CI and the study's p-value (every variant and round counted). Until an ablation has run,
the page says how to run one."""

import pandas as pd
import streamlit as st
from nas.dashboard import figures, queries, ui

st.title("Ablations")
engine, url = ui.connect()
experiment = ui.choose_experiment(engine, url)
store = queries.open_store(url)
references = queries.ablation_references(store, url, experiment)
if not references:
    st.info(f"**No ablation of {experiment} yet.** An ablation re-trains the winner's variants, each "
            "with one component switched off or one knob moved a step, on the seeds the winner was "
            "confirmed with, so each component's contribution comes with a confidence interval. Run:")
    st.code(f"nas ablate {experiment}", language="bash")
    st.caption("Add `--dry-run` to see the plan first, or `--arch HASH` to ablate another architecture "
               "than the best. This page shows the contribution table once the runs are in the store.")
    st.stop()

names = {h: (queries.architecture(engine, url, h) or {}).get("short_name", h) for h in references}
reference = ui.query_select("ref", "Reference architecture", references,
                            format_func=lambda h: f"{names[h]}  ({h})") if len(references) > 1 else references[0]
report = queries.ablation_report(store, url, experiment, reference)
acc = report.reference_accuracy
st.caption(f"Reference **{report.reference_name}** (`{report.reference_hash}`): "
           f"{ui.mean_pm(acc.mean, acc.std)} over {ui.plural(acc.n, 'seed')}, "
           f"{report.reference_params / 1e6:.3f} M params, {report.reference_flops / 1e6:.1f} MFLOPs.")

rows = pd.DataFrame([{
    "change": r.change, "short_name": r.short_name, "arch_hash": r.arch_hash, "seeds": r.accuracy.n,
    "delta": r.accuracy.mean, "ci_low": r.accuracy.ci_low, "ci_high": r.accuracy.ci_high,
    "study_p": r.p, "matters": r.matters, "delta_seconds": r.train_seconds,
    "delta_params": r.params, "delta_flops": r.flops,
} for r in report.rows])
if rows.empty:
    st.info("The ablation's variants have no completed runs yet; they appear here as they finish.")
    st.stop()
st.plotly_chart(figures.ablation_figure(rows), key="ablation_chart")
st.caption("Bars: mean accuracy change of the variant against the reference on the same seeds; "
           "whiskers: 95% CI of the paired difference. Dark bars matter: the study's p < 0.05 (the chance of "
           "any false 'matters' over every variant and round held at 0.05).")
st.dataframe(
    rows.assign(delta=rows["delta"] * 100,
                ci=[f"{lo * 100:+.2f} to {hi * 100:+.2f}" if pd.notna(lo) else "-"
                    for lo, hi in zip(rows["ci_low"], rows["ci_high"])],
                delta_params=rows["delta_params"] / 1e6, delta_flops=rows["delta_flops"] / 1e6)[
        ["change", "short_name", "seeds", "delta", "ci", "study_p", "matters", "delta_seconds",
         "delta_params", "delta_flops", "arch_hash"]],
    hide_index=True, key="ablation_table",
    column_config={
        "change": "Change", "short_name": "Variant", "seeds": "Paired seeds",
        "delta": st.column_config.NumberColumn("Accuracy change (pp)", format="%+.2f"),
        "ci": "95% CI (pp)",
        "study_p": st.column_config.NumberColumn("p (study)", format="%.3g"),
        "matters": st.column_config.CheckboxColumn("Matters"),
        "delta_seconds": st.column_config.NumberColumn("Train time change (s)", format="%+.1f"),
        "delta_params": st.column_config.NumberColumn("Params change (M)", format="%+.3f"),
        "delta_flops": st.column_config.NumberColumn("FLOPs change (M)", format="%+.1f"),
        "arch_hash": "Hash",
    },
)
