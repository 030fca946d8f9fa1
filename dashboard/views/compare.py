"""Compare: experiments of this store side by side (`nas compare`): the architectures they
share, each one's accuracy in each with its 95% CI, and how alike they rank them (Spearman,
Kendall, bootstrap CIs): does a cheap budget rank architectures as the full one does?"""

import pandas as pd
import streamlit as st
from nas.dashboard import figures, queries, ui

from nas.errors import ConfigError

RESAMPLES = 1000  # bootstrap resamples per CI: a page renders in well under a second

st.title("Compare experiments")
engine, url = ui.connect()
table = queries.experiments(engine, url)
if table.empty:
    ui.empty_store()
    st.stop()
names = table["name"].tolist()
if len(names) < 2:
    st.info(f"**Comparing needs two experiments; this store holds one ({names[0]}).** Run the same space at "
            "another budget, e.g. the cpu budget beside the full one, then compare how they rank architectures:")
    st.code("nas launch search_spaces/page_post4.yaml --budget cpu", language="bash")
    st.caption("Experiments in another store: `nas compare NAME@STORE NAME@STORE` on the command line.")
    st.stop()

# the choice lives in the URL (?cmp=a,b), so a comparison can be bookmarked or sent
wanted = [n for n in (st.query_params.get("cmp") or "").split(",") if n in names] or names[:2]
chosen = st.multiselect("Experiments (the first is the reference order)", names, default=wanted, key="cmp_box")
st.query_params["cmp"] = ",".join(chosen)
match = st.radio("Same architecture when", ["auto", "name", "hash"], horizontal=True, key="cmp_match",
                 captions=["name, unless width varies inside one", "same short name without w=", "same config"])
if len(chosen) < 2:
    st.info("Choose at least two experiments to compare.")
    st.stop()
store = queries.open_store(url)
try:
    result = queries.comparison(store, url, tuple(chosen), match, RESAMPLES)
except ConfigError as err:
    st.info(str(err))
    st.stop()

how = "by hash (the same config)" if result.match == "hash" else "by short name without width (" + "; ".join(
    f"{label}: {', '.join(result.widths(label))}" for label in result.labels) + ")"
st.caption(f"**{len(result.keys)} shared architectures**, matched {how}. Each result is from the phase with the "
           "most completed seeds (confirm or search).")
for label, keys in result.only.items():
    if keys:
        st.caption(f"Only in {label} ({len(keys)}): {', '.join(keys)}")
if len(result.keys) < 3:
    st.warning(f"A rank correlation needs at least 3 shared architectures; these share {len(result.keys)}.")

frame = result.architectures_frame()
for c in result.correlations:
    st.subheader(f"{c.a} vs {c.b}")
    left, right, best = st.columns(3)
    left.metric("Spearman rho", f"{c.spearman:+.2f}")
    left.caption(f"95% CI {c.spearman_ci[0]:+.2f} to {c.spearman_ci[1]:+.2f} over architectures"
                 + ("" if pd.isna(c.spearman_seed_ci[0]) else
                    f"; {c.spearman_seed_ci[0]:+.2f} to {c.spearman_seed_ci[1]:+.2f} over seeds"))
    right.metric("Kendall tau", f"{c.kendall:+.2f}")
    right.caption(f"95% CI {c.kendall_ci[0]:+.2f} to {c.kendall_ci[1]:+.2f} over architectures"
                  + ("" if pd.isna(c.kendall_seed_ci[0]) else
                     f"; {c.kendall_seed_ci[0]:+.2f} to {c.kendall_seed_ci[1]:+.2f} over seeds"))
    best.metric("Same best architecture", "yes" if c.same_best else "no")
    st.plotly_chart(figures.compare_figure(frame, c.a, c.b), key=f"compare_chart_{c.a}_{c.b}")
if result.correlations:
    st.caption(f"Percentile bootstrap CIs, {RESAMPLES} resamples each, seed 0: over architectures (which ones were "
               "compared) and over seeds (each architecture's seeds resampled within each experiment).")

wide = frame.assign(accuracy=frame["accuracy_mean"] * 100,
                    ci=[f"{lo * 100:.2f} to {hi * 100:.2f}" if pd.notna(lo) else "-"
                        for lo, hi in zip(frame["accuracy_ci_low"], frame["accuracy_ci_high"])])
st.dataframe(
    wide[["architecture", "experiment", "accuracy", "ci", "seeds", "phase", "rank", "short_name", "arch_hash"]],
    hide_index=True, key="compare_table",
    column_config={
        "architecture": "Architecture", "experiment": "Experiment",
        "accuracy": st.column_config.NumberColumn("Accuracy (%)", format="%.2f"), "ci": "95% CI (%)",
        "seeds": "Seeds", "phase": "Phase", "rank": "Rank (1 = best)", "short_name": "Short name", "arch_hash": "Hash",
    },
)
