"""Pareto front: accuracy against a cost (train seconds, params or FLOPs), the
non-dominated set highlighted and joined, confirmed architectures with 95% CIs and the
confirm race's decision (best, not separated from the best, worse); a grid study with seed repeats and
no confirm phase shows its search architectures the same way. Selecting a point opens that
architecture."""

import streamlit as st
from nas.dashboard import figures, queries, ui

st.title("Pareto front")
engine, url = ui.connect()
experiment = ui.choose_experiment(engine, url)

counts = queries.phase_counts(engine, url, experiment)
phases = sorted(set(counts.loc[counts["status"] == "completed", "phase"]))
options = (["search"] if "search" in phases else []) + [p for p in phases if p != "search"]
if not options:
    st.info(f"No completed trials in **{experiment}** yet; the front appears as soon as one finishes.")
    st.stop()

left, middle, right = st.columns([2, 2, 1])
cost = left.radio("Cost axis", list(figures.COSTS), horizontal=True, key="pareto_cost",
                  format_func=lambda c: figures.COSTS[c].short)
phase = middle.radio("Points", options + (["all phases"] if len(options) > 1 else []), horizontal=True,
                     key="pareto_phase", help="architectures are averaged over their completed trials of this phase")
log_x = right.toggle("log x", key="pareto_log_x")

points = queries.pareto_points(engine, url, experiment, None if phase == "all phases" else phase, cost)
confirmed = queries.seed_summary(engine, url, experiment, "confirm")
figure = figures.pareto_figure(points, confirmed, cost, log_x=log_x)
event = st.plotly_chart(figure, key="pareto_chart", on_select="rerun", selection_mode="points")
picked = ui.selected_hash(event)
if picked:
    ui.open_architecture(experiment, picked)
st.caption(f"{len(points)} architectures ({phase}), {int(points['on_front'].sum())} non-dominated "
           "(accuracy up, cost down). Click a point to open its architecture. "
           + ("Diamonds: confirm-phase mean with its 95% CI over seeds." if not confirmed.empty else ""))

st.subheader("Non-dominated architectures")
front = points[points["on_front"]].sort_values(cost)
st.dataframe(
    front.assign(accuracy=front["accuracy"] * 100, params=front["params"] / 1e6, flops=front["flops"] / 1e6)[
        ["short_name", "arch_hash", "accuracy", "train_seconds", "params", "flops", "seeds"]],
    hide_index=True, key="pareto_front_table",
    column_config={
        "short_name": "Architecture", "arch_hash": "Hash",
        "accuracy": st.column_config.NumberColumn("Accuracy (%)", format="%.2f"),
        "train_seconds": st.column_config.NumberColumn("Train time (s)", format="%.1f"),
        "params": st.column_config.NumberColumn("Params (M)", format="%.3f"),
        "flops": st.column_config.NumberColumn("FLOPs (M)", format="%.1f"),
        "seeds": st.column_config.NumberColumn("Seeds"),
    },
)
# The decided architectures: the confirm race's answer, else (a grid study with seed repeats,
# no confirm phase) the search's on its shared seeds; in `nas status` order (# is `nas export
# --rank` for confirm): the best, those it could not be separated from, the worse; one not
# separated may be the cheaper choice.
decided, decided_phase = confirmed, "confirm"
if confirmed.empty and "search" in phases and queries.search_decides(queries.open_store(url), url, experiment):
    decided, decided_phase = queries.seed_summary(engine, url, experiment, "search"), "search"
if not decided.empty:
    st.subheader("Confirmed architectures (mean ± 95% CI over seeds)" if decided_phase == "confirm" else
                 "Search architectures on shared seeds (mean ± 95% CI over seeds)")
    decisions = queries.decisions(queries.open_store(url), url, experiment, decided_phase)
    table = decided.merge(decisions, on="arch_hash", how="left")
    st.dataframe(
        table.assign(
            accuracy_ci=[ui.percent(lo) + " – " + ui.percent(hi)
                         for lo, hi in zip(table["accuracy_ci_low"], table["accuracy_ci_high"])],
            accuracy=table["accuracy"] * 100, accuracy_std=table["accuracy_std"] * 100,
            decision=table["decision"].fillna("-"),
        ).sort_values(["rank", "accuracy"], ascending=[True, False], na_position="last")[
            ["rank", "decision", "short_name", "arch_hash", "seeds", "accuracy", "accuracy_std", "accuracy_ci",
             "train_seconds", "pareto_front", "front_share"]],
        hide_index=True, key="pareto_confirmed_table",
        column_config={
            "rank": st.column_config.NumberColumn("#", help="nas export --rank" if decided_phase == "confirm"
                                                  else "best, not separated, worse"),
            "decision": st.column_config.TextColumn(
                "Decision", help="Every pair on the same seeds (paired t), the chance of any false 'worse' over "
                                 "all pairs and rounds held at 0.05; worse: p < 0.05; not separated: with "
                                 "the difference the seeds could detect at 80% power"),
            "short_name": "Architecture", "arch_hash": "Hash", "seeds": "Seeds",
            "accuracy": st.column_config.NumberColumn("Accuracy mean (%)", format="%.2f"),
            "accuracy_std": st.column_config.NumberColumn("Std (pp)", format="%.2f"),
            "accuracy_ci": "95% CI",
            "train_seconds": st.column_config.NumberColumn("Train time mean (s)", format="%.1f"),
            "pareto_front": st.column_config.NumberColumn(
                "Pareto front", help="Numbered from 1: 1 is the front, 2 the front without it, ... (as nas status)"),
            "front_share": st.column_config.NumberColumn(
                "On the front", format="%.2f", help="Share of 400 seed bootstraps in which it is on the Pareto "
                                                   "front: how sure its place there is"),
        },
    )

# Fallback for selection: pick from a list (front first, then by accuracy).
ranked = points.sort_values(["on_front", "accuracy"], ascending=[False, False])
names = dict(zip(ranked["arch_hash"], ranked["short_name"]))
names.update(dict(zip(confirmed["arch_hash"], confirmed["short_name"])))
choice_col, button_col = st.columns([4, 1], vertical_alignment="bottom")
choice = choice_col.selectbox("Open an architecture", list(names), index=None, key="pareto_open",
                              format_func=lambda h: f"{names[h]}  ({h})", placeholder="choose an architecture")
if button_col.button("Open", key="pareto_open_button", disabled=choice is None):
    ui.open_architecture(experiment, choice)
