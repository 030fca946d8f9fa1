"""Plotly figures of the dashboard: plain functions from the query module's frames to
`go.Figure`, with units in every axis title. Accuracies arrive as fractions and are
drawn in percent; costs are scaled to readable units (M params, MFLOPs, seconds).

Every point that stands for an architecture carries ``customdata[0] = arch hash`` so a
selection on the chart opens that architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

WEBGL_ABOVE = 2_000  # points; WebGL scatter beyond this (SVG is slow), SVG below (works without a GPU)
STATUS_COLORS = {
    "completed": "#1f77b4", "pruned": "#ff7f0e", "failed": "#d62728", "diverged": "#9467bd",
    "running": "#2ca02c", "interrupted": "#7f7f7f",
}
PHASE_DASH = {"search": "solid", "confirm": "solid", "train": "solid", "ablation": "dot"}
ACCURACY_TITLE = "Accuracy (%)"
FRONT_COLOR = "#d62728"
CONFIRM_COLOR = "#2ca02c"


@dataclass(frozen=True)
class Axis:
    title: str  # with the unit
    scale: float  # stored value x scale = plotted value
    hover: str  # d3 format of the hover value
    short: str = ""  # for a radio button


COSTS = {
    "train_seconds": Axis("Train time per run (s)", 1.0, ".1f", "train time (s)"),
    "params": Axis("Parameters (millions)", 1e-6, ".3f", "params (M)"),
    "flops": Axis("FLOPs per image (MFLOPs)", 1e-6, ".1f", "FLOPs (M)"),
}
CURVE_METRICS = {
    "val_acc": Axis("Validation accuracy (%)", 100.0, ".2f"),
    "test_acc": Axis("Test accuracy (%)", 100.0, ".2f"),
    "train_acc": Axis("Train accuracy (%)", 100.0, ".2f"),
    "train_loss": Axis("Train loss (cross-entropy, nats)", 1.0, ".3f"),
    "cumulative_seconds": Axis("Train time so far (s)", 1.0, ".1f"),
}


def _layout(fig: go.Figure, *, x: str, y: str, height: int = 480) -> go.Figure:
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=40, b=10), hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
        xaxis_title=x, yaxis_title=y,
    )
    return fig


def _scatter(n: int):
    return go.Scattergl if n > WEBGL_ABOVE else go.Scatter


# ---- Pareto front -----------------------------------------------------------------------


def pareto_figure(points: pd.DataFrame, confirmed: pd.DataFrame, cost: str, *, log_x: bool = False) -> go.Figure:
    """Accuracy against `cost` per architecture, the front highlighted and joined, and
    the confirmed architectures with 95% CI error bars over their seeds.

    Args:
        points: `queries.pareto_points` (one row per architecture, with ``on_front``).
        confirmed: `queries.seed_summary` of the confirm phase (may be empty).
        cost: ``train_seconds``, ``params`` or ``flops``.
    """
    axis = COSTS[cost]
    hover = ("<b>%{customdata[1]}</b><br>hash %{customdata[0]}<br>accuracy %{y:.2f}%<br>"
             f"{axis.title} %{{x:{axis.hover}}}<br>seeds %{{customdata[2]}}<extra>%{{fullData.name}}</extra>")
    fig = go.Figure()
    others = points[~points["on_front"]]
    fig.add_trace(_scatter(len(others))(
        x=others[cost] * axis.scale, y=others["accuracy"] * 100, mode="markers", name="architectures",
        marker=dict(color="#8c96a0", size=7, opacity=0.55), customdata=_custom(others),
        hovertemplate=hover,
    ))
    front = points[points["on_front"]].sort_values(cost)
    fig.add_trace(go.Scatter(
        x=front[cost] * axis.scale, y=front["accuracy"] * 100, mode="lines+markers", name="Pareto front",
        line=dict(color=FRONT_COLOR, width=2), marker=dict(color=FRONT_COLOR, size=10),
        customdata=_custom(front), hovertemplate=hover,
    ))
    if not confirmed.empty:
        error_x = None
        if cost == "train_seconds":
            error_x = _error_bar(confirmed, "train_seconds", 1.0)
        fig.add_trace(go.Scatter(
            x=confirmed[cost] * axis.scale, y=confirmed["accuracy"] * 100, mode="markers",
            name="confirmed (mean ± 95% CI)",
            marker=dict(color=CONFIRM_COLOR, size=12, symbol="diamond", line=dict(color="white", width=1)),
            error_y=_error_bar(confirmed, "accuracy", 100.0), error_x=error_x,
            customdata=_custom(confirmed), hovertemplate=hover,
        ))
    _layout(fig, x=axis.title, y=ACCURACY_TITLE, height=520)
    if log_x:
        fig.update_xaxes(type="log")
    return fig


def _custom(frame: pd.DataFrame) -> np.ndarray:
    return np.stack([frame["arch_hash"].astype(str), frame["short_name"].astype(str),
                     frame["seeds"].astype(int).astype(str)], axis=-1) if len(frame) else np.empty((0, 3))


def _error_bar(frame: pd.DataFrame, metric: str, scale: float) -> dict:
    """Asymmetric error bars from CI columns; a single seed (NaN CI) draws no bar."""
    plus = ((frame[f"{metric}_ci_high"] - frame[metric]) * scale).fillna(0.0)
    minus = ((frame[metric] - frame[f"{metric}_ci_low"]) * scale).fillna(0.0)
    return dict(type="data", symmetric=False, array=plus.tolist(), arrayminus=minus.tolist(),
                thickness=1.5, width=4, color=CONFIRM_COLOR)


# ---- learning curves --------------------------------------------------------------------


def curves_figure(epochs: pd.DataFrame, trials: pd.DataFrame, metric: str = "val_acc", *,
                  band: pd.DataFrame | None = None, color_by: str = "status") -> go.Figure:
    """Overlaid learning curves, one line per trial; a trial that stopped early (pruned,
    failed, diverged) ends in an ``x`` where it stopped.

    Args:
        epochs: `queries.epochs` rows (trial_id, epoch, metrics).
        trials: the trials drawn (id, short_name, seed, phase, status, epochs_planned).
        metric: a column of `epochs` (see `CURVE_METRICS`).
        band: optional per-epoch ``mean`` and ``std`` (from `mean_std_band`), drawn as
            mean ± std behind the curves.
        color_by: ``status`` or ``seed`` (one colour per seed, for one architecture).
    """
    axis = CURVE_METRICS[metric]
    fig = go.Figure()
    if band is not None and not band.empty:
        x = (band["epoch"] + 1).tolist()
        upper = ((band["mean"] + band["std"].fillna(0)) * axis.scale).tolist()
        lower = ((band["mean"] - band["std"].fillna(0)) * axis.scale).tolist()
        fig.add_trace(go.Scatter(x=x + x[::-1], y=upper + lower[::-1], fill="toself", name="mean ± std",
                                 fillcolor="rgba(31,119,180,0.15)", line=dict(width=0), hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=(band["mean"] * axis.scale).tolist(), mode="lines", name="mean",
                                 line=dict(color="black", width=3),
                                 hovertemplate=f"epoch %{{x}}<br>mean %{{y:{axis.hover}}}<extra></extra>"))
    # One trace per legend entry, its trials separated by gaps (None): hundreds of curves
    # cost a few traces, not hundreds (Plotly builds and validates each trace).
    # Scaled once, column-wise; each trial's rows are then picked by position (per-trial
    # pandas arithmetic costs ~1 ms a curve, most of the figure's time at 300 curves).
    by_trial = epochs.groupby("trial_id", sort=False).indices
    scaled = (epochs[metric] * axis.scale).to_numpy()
    epoch_1 = (epochs["epoch"] + 1).to_numpy()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    lines: dict[str, dict] = {}
    stops_x, stops_y, stops_text = [], [], []
    for trial in trials.itertuples(index=False):
        rows = by_trial.get(trial.id)
        if rows is None or len(rows) == 0:
            continue
        values, epochs_1 = scaled[rows].tolist(), epoch_1[rows].tolist()
        legend = f"seed {trial.seed} ({trial.phase})" if color_by == "seed" else trial.status
        if legend not in lines:
            color = palette[len(lines) % len(palette)] if color_by == "seed" else STATUS_COLORS.get(trial.status, "#7f7f7f")
            lines[legend] = dict(x=[], y=[], text=[], color=color, dash=PHASE_DASH.get(trial.phase, "solid"))
        line = lines[legend]
        label = f"#{trial.id} {trial.short_name} seed {trial.seed} ({trial.phase}, {trial.status})"
        line["x"] += epochs_1 + [None]
        line["y"] += values + [None]
        line["text"] += [label] * len(values) + [None]
        if trial.status in ("pruned", "failed", "diverged") and len(rows) < trial.epochs_planned:
            stops_x.append(epochs_1[-1])
            stops_y.append(values[-1])
            stops_text.append(f"{label}<br>stopped after epoch {epochs_1[-1]} of {trial.epochs_planned}")
    for legend, line in lines.items():
        fig.add_trace(go.Scatter(
            x=line["x"], y=line["y"], text=line["text"], mode="lines", name=legend, connectgaps=False,
            opacity=0.8 if color_by == "seed" else 0.6, line=dict(color=line["color"], width=1.5, dash=line["dash"]),
            hovertemplate=f"%{{text}}<br>epoch %{{x}}<br>%{{y:{axis.hover}}}<extra></extra>",
        ))
    if stops_x:
        fig.add_trace(go.Scatter(
            x=stops_x, y=stops_y, mode="markers", name="stopped here (pruned/failed)",
            marker=dict(symbol="x", size=11, color="black", line=dict(width=1)),
            text=stops_text, hovertemplate="%{text}<extra></extra>",
        ))
    fig.update_layout(showlegend=True)  # also for a single curve: its legend names the seed
    return _layout(fig, x="Epoch", y=axis.title, height=440)


def mean_std_band(epochs: pd.DataFrame, trial_ids: list[int], metric: str) -> pd.DataFrame:
    """Per epoch, the mean and sample std of `metric` over the given trials."""
    rows = epochs[epochs["trial_id"].isin(trial_ids)]
    if rows.empty:
        return pd.DataFrame(columns=["epoch", "mean", "std", "n"])
    grouped = rows.groupby("epoch")[metric]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()}).reset_index()


# ---- search insight ---------------------------------------------------------------------


def importance_figure(importances: dict[str, float]) -> go.Figure:
    """Horizontal bars of Optuna parameter importances (shares of the total, %)."""
    names = list(importances)[::-1]
    values = [importances[n] * 100 for n in names]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color="#1f77b4",
                           hovertemplate="%{y}: %{x:.1f}%<extra></extra>"))
    return _layout(fig, x="Importance (% of total)", y="Space dimension", height=max(260, 40 * len(names) + 80))


def dimension_figure(trials: pd.DataFrame, keys: list[str]) -> go.Figure:
    """Accuracy of completed trials by the value of each space dimension: one box per value,
    one panel per dimension; every trial a point up to `WEBGL_ABOVE` trials. Above, the
    boxes are drawn from quartiles computed here (`_box_stats`), so the figure carries a
    few numbers per box, not every trial (60,000 trials x 7 dimensions: seconds to build
    and megabytes to send)."""
    cols = min(3, max(1, len(keys)))
    rows = math.ceil(len(keys) / cols) if keys else 1
    fig = make_subplots(rows=rows, cols=cols, shared_yaxes=True, horizontal_spacing=0.04,
                        vertical_spacing=0.18, subplot_titles=keys)
    style = dict(marker=dict(size=5, opacity=0.6, color="#1f77b4"), line=dict(width=1.5, color="#1f77b4"),
                 fillcolor="rgba(31,119,180,0.25)", showlegend=False)
    for i, key in enumerate(keys):
        row, col = divmod(i, cols)
        values = trials[key].map({v: _label(v) for v in trials[key].unique()})  # once per value, not per trial
        order = sorted(values.unique(), key=_sort_key)
        if len(trials) <= WEBGL_ABOVE:
            box = go.Box(
                x=values, y=trials["accuracy"] * 100, name=key, boxpoints="all", jitter=0.4, pointpos=0,
                customdata=trials["short_name"],
                hovertemplate=f"{key} = %{{x}}<br>accuracy %{{y:.2f}}%<br>%{{customdata}}<extra></extra>", **style,
            )
        else:
            box = go.Box(name=key, **_box_stats(trials["accuracy"] * 100, values, order), **style)
        fig.add_trace(box, row=row + 1, col=col + 1)
        fig.update_xaxes(title_text=f"{key} (value)", type="category", categoryorder="array",
                         categoryarray=order, row=row + 1, col=col + 1)
    for r in range(rows):
        fig.update_yaxes(title_text=ACCURACY_TITLE, row=r + 1, col=1)
    fig.update_layout(height=320 * rows + 40, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def _box_stats(y: pd.Series, groups: pd.Series, order: list[str]) -> dict[str, list]:
    """A precomputed box per group, as Plotly draws one from its points: quartiles by linear
    interpolation, whiskers at the furthest points within 1.5 IQR of the box."""
    stats: dict[str, list] = {k: [] for k in ("x", "q1", "median", "q3", "lowerfence", "upperfence")}
    by_group = y.groupby(groups)
    for value in order:
        points = by_group.get_group(value).dropna().to_numpy()
        if not len(points):
            continue
        q1, median, q3 = np.percentile(points, [25, 50, 75])
        reach = 1.5 * (q3 - q1)
        stats["x"].append(value)
        stats["q1"].append(q1)
        stats["median"].append(median)
        stats["q3"].append(q3)
        stats["lowerfence"].append(points[points >= q1 - reach].min())
        stats["upperfence"].append(points[points <= q3 + reach].max())
    return stats


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sort_key(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def pruning_figure(savings: pd.DataFrame) -> go.Figure:
    """Per status of the finished search trials: epochs run, and planned epochs not run."""
    fig = go.Figure()
    fig.add_trace(go.Bar(y=savings["status"], x=savings["epochs_run"], orientation="h", name="epochs run",
                         marker_color="#1f77b4", hovertemplate="%{y}: %{x} epochs run<extra></extra>"))
    not_run = savings["epochs_planned"] - savings["epochs_run"]
    fig.add_trace(go.Bar(y=savings["status"], x=not_run, orientation="h", name="planned, not run",
                         marker_color="#ff7f0e", hovertemplate="%{y}: %{x} epochs not run<extra></extra>"))
    fig.update_layout(barmode="stack")
    return _layout(fig, x="Epochs (summed over trials)", y="Trial status", height=280)


# ---- experiments and ablations ----------------------------------------------------------


def experiments_figure(table: pd.DataFrame) -> go.Figure:
    """Stacked trial counts by status per experiment."""
    fig = go.Figure()
    for status in ("completed", "pruned", "failed", "running", "interrupted"):
        fig.add_trace(go.Bar(x=table["name"], y=table[status], name=status, marker_color=STATUS_COLORS[status],
                             hovertemplate=f"%{{x}}: %{{y}} {status}<extra></extra>"))
    fig.update_layout(barmode="stack")
    return _layout(fig, x="Experiment", y="Trials (count)", height=320)


def ablation_figure(rows: pd.DataFrame) -> go.Figure:
    """Each variant's accuracy change against the reference (percentage points) with the
    95% CI of the paired difference; variants that matter (the study's p < 0.05) in full colour.

    Args:
        rows: one row per variant with ``change``, ``short_name``, ``arch_hash``, ``delta``,
            ``ci_low``, ``ci_high`` (fractions) and ``matters``.
    """
    plus = ((rows["ci_high"] - rows["delta"]) * 100).fillna(0.0)
    minus = ((rows["delta"] - rows["ci_low"]) * 100).fillna(0.0)
    fig = go.Figure(go.Bar(
        x=rows["delta"] * 100, y=rows["change"], orientation="h",
        marker_color=["#1f77b4" if m else "rgba(31,119,180,0.35)" for m in rows["matters"]],
        error_x=dict(type="data", symmetric=False, array=plus.tolist(), arrayminus=minus.tolist(), color="#333"),
        customdata=np.stack([rows["arch_hash"].astype(str), rows["short_name"].astype(str)], axis=-1),
        hovertemplate="%{y}<br>%{customdata[1]}<br>%{x:+.2f} pp<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")  # the table's order: most harmful first
    return _layout(fig, x="Accuracy change vs reference (percentage points)", y="Change",
                   height=max(260, 40 * len(rows) + 100))


def compare_figure(frame: pd.DataFrame, a: str, b: str) -> go.Figure:
    """Each shared architecture's mean accuracy in experiment `a` (x) against `b` (y), with
    their 95% CIs as whiskers: points on a rising line rank alike.

    Args:
        frame: `nas.compare.Comparison.architectures_frame` (one row per architecture and experiment).
    """
    frame = frame.rename(columns={"accuracy_mean": "accuracy"})  # the CI columns' stem, for _error_bar
    xa = frame[frame["experiment"] == a].set_index("architecture")
    xb = frame[frame["experiment"] == b].set_index("architecture").loc[xa.index]
    fig = go.Figure(go.Scatter(
        x=xa["accuracy"] * 100, y=xb["accuracy"] * 100, mode="markers+text", text=list(xa.index),
        textposition="top center", error_x=_error_bar(xa, "accuracy", 100.0), error_y=_error_bar(xb, "accuracy", 100.0),
        customdata=np.stack([xb["arch_hash"].astype(str), xa["seeds"].astype(str), xb["seeds"].astype(str)], axis=-1),
        hovertemplate="%{text}<br>%{x:.2f}% (%{customdata[1]} seeds) vs %{y:.2f}% (%{customdata[2]} seeds)"
                      "<extra></extra>",
    ))
    return _layout(fig, x=f"{a}: accuracy (%)", y=f"{b}: accuracy (%)")


# ---- early exits ------------------------------------------------------------------------


def threshold_label(threshold: float) -> str:
    """A threshold for people: ``0.45``; ``∞`` for the one that sends every image to the first exit."""
    return "∞" if math.isinf(threshold) else f"{threshold:.4g}"


def exit_curve_figure(points: pd.DataFrame, operating: float | None = None) -> go.Figure:
    """Accuracy against mean inference FLOPs per image across exit thresholds (BranchyNet),
    the architecture's own threshold marked.

    Args:
        points: one trial's `queries.exit_curves` rows (threshold, accuracy, mean_flops).
        operating: the architecture's `exits.threshold`, drawn as its own point.
    """
    labels = [threshold_label(t) for t in points["threshold"]]
    fig = go.Figure(go.Scatter(
        x=points["mean_flops"] * 1e-6, y=points["accuracy"] * 100, mode="lines+markers",
        name="accuracy vs mean inference FLOPs", line=dict(color="#1f77b4"), customdata=labels,
        hovertemplate="threshold %{customdata}<br>%{x:.2f} MFLOPs<br>%{y:.2f}%<extra></extra>",
    ))
    chosen = points[points["threshold"] == operating] if operating is not None else points.iloc[:0]
    if not chosen.empty:
        fig.add_trace(go.Scatter(
            x=chosen["mean_flops"] * 1e-6, y=chosen["accuracy"] * 100, mode="markers",
            name=f"exits.threshold {threshold_label(operating)}", marker=dict(color=FRONT_COLOR, size=12),
            hovertemplate="exits.threshold<br>%{x:.2f} MFLOPs<br>%{y:.2f}%<extra></extra>",
        ))
    return _layout(fig, x="Mean inference FLOPs per image (MFLOPs)", y=ACCURACY_TITLE, height=400)


def exit_share_figure(points: pd.DataFrame, exit_names: list[str]) -> go.Figure:
    """Share of images leaving at each exit per threshold, stacked to 100%.

    Args:
        points: one trial's `queries.exit_curves` rows (threshold, exit_shares).
        exit_names: the exits in order: the side exits' stages, then ``final``.
    """
    labels = [threshold_label(t) for t in points["threshold"]]
    shares = np.array(points["exit_shares"].tolist(), dtype=float).reshape(len(points), -1)
    fig = go.Figure()
    for k, name in enumerate(exit_names):
        fig.add_trace(go.Bar(
            x=labels, y=shares[:, k] * 100 if k < shares.shape[1] else [], name=f"exit {name}",
            hovertemplate=f"threshold %{{x}}: %{{y:.1f}}% leave at {name}<extra></extra>",
        ))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(type="category")  # thresholds as labels, in order, ∞ last
    return _layout(fig, x="Threshold (softmax entropy / ln 10 below which an image leaves)",
                   y="Images leaving at each exit (%)", height=360)


def width_curve_figure(curve: pd.DataFrame, separate: pd.DataFrame, member_names: list[str]) -> go.Figure:
    """Accuracy against FLOPs per image across the widths of one universally slimmable
    network (US-Nets), beside the widths of the same architecture trained on their own.

    Args:
        curve: one trial's `queries.width_curves` rows (width, flops, params, accuracy).
        separate: `queries.width_siblings` rows (one per trial: width, flops, accuracy, ...).
        member_names: the short name of the member at each width of `curve`, in its order.
    """
    custom = np.stack([curve["width"].to_numpy(dtype=float), curve["params"].to_numpy(dtype=float) * 1e-6,
                       np.array(member_names, dtype=object)], axis=1) if len(curve) else None
    fig = go.Figure(go.Scatter(
        x=curve["flops"] * 1e-6, y=curve["accuracy"] * 100, mode="lines+markers",
        name="US-Net: one training, every width", line=dict(color="#1f77b4"), customdata=custom,
        hovertemplate="width ratio %{customdata[0]:g}: %{customdata[2]}<br>%{customdata[1]:.3f} M params"
                      "<br>%{x:.2f} MFLOPs<br>%{y:.2f}%<extra></extra>",
    ))
    if not separate.empty:
        fig.add_trace(go.Scatter(
            x=separate["flops"] * 1e-6, y=separate["accuracy"] * 100, mode="markers",
            name="each width trained separately", marker=dict(color=FRONT_COLOR, size=10, symbol="diamond"),
            customdata=np.stack([separate["short_name"].to_numpy(dtype=object), separate["seed"].to_numpy(),
                                 separate["experiment"].to_numpy(dtype=object)], axis=1),
            hovertemplate="%{customdata[0]}, seed %{customdata[1]} (%{customdata[2]})<br>%{x:.2f} MFLOPs"
                          "<br>%{y:.2f}%<extra></extra>",
        ))
    return _layout(fig, x="FLOPs per image (MFLOPs)", y=ACCURACY_TITLE, height=420)
