"""Reports for sweeps, simulated or real: terminal tables, throughput-at-equal-latency comparisons,
JSON, and latency-vs-rate plots in the style of the paper's Figure 12; for closed-loop fleets (rows per
`concurrency`), throughput ratios at equal concurrency, their table and plot.

Rows are plain dicts (one per system and rate) with at least `rate`, `mean_latency`, `p95_latency` and a
series key naming the system (`policy` for the simulator, `target` for real endpoints).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autellix.metrics import Comparison, latency_target, throughput_at_equal_latency

DEFAULT_MULTIPLES = (2.0, 5.0, 10.0)
"""Latency targets reported, as multiples of the baseline's latency at the lowest swept rate."""
HEADLINE_MULTIPLE = 5.0
"""The multiple quoted as *the* gain: at or just past the knee of FCFS's curve in the simulator's sweeps
(docs/simulator.md)."""

STABLE_GROWTH = 0.05
"""A sweep point counts as sustained only if its backlog grew by at most this share of the work that
arrived (metrics.backlog_growth); past it the point's latency is a finite run's, not a steady state's."""

Row = Mapping[str, Any]


def series(rows: Iterable[Row], key: str = "policy", x: str = "rate") -> dict[str, list[Row]]:
    """Rows grouped by system, each group sorted by `x` (first-seen system order kept)."""
    out: dict[str, list[Row]] = {}
    for row in rows:
        out.setdefault(str(row[key]), []).append(row)
    return {name: sorted(group, key=lambda r: r[x]) for name, group in out.items()}


def compare(rows: Iterable[Row], baseline: str, key: str = "policy", metric: str = "mean_latency",
            multiples: Sequence[float] = DEFAULT_MULTIPLES, stable: bool = False) -> list[dict[str, Any]]:
    """Throughput at equal latency of every system against `baseline`, at each target multiple of the
    baseline's lowest-rate latency. Systems must share the baseline's rates (interleaved sweeps do).
    `stable`: a point whose backlog grew (`backlog_growth` > STABLE_GROWTH) counts as over the target,
    so each rate is one the system sustained in a steady state; the target itself is unchanged."""
    groups = series(rows, key)
    if baseline not in groups:
        return []
    base = groups[baseline]
    rates = [r["rate"] for r in base]
    base_lat = [float(r[metric]) for r in base]
    target_lat = [_latency(r, metric, stable) for r in base]
    out = []
    for name, group in groups.items():
        if name == baseline:
            continue
        by_rate = {r["rate"]: _latency(r, metric, stable) for r in group}
        if any(rate not in by_rate for rate in rates):
            continue
        lat = [by_rate[rate] for rate in rates]
        for m in multiples:
            c: Comparison = throughput_at_equal_latency(rates, lat, target_lat,
                                                        latency_target(rates, base_lat, m))
            out.append({"system": name, "baseline": baseline, "metric": metric, "multiple": m,
                        "stable": stable, **c.as_dict()})
    return out


def backlog_grew(row: Row) -> bool:
    """Whether the point was past capacity (`backlog_growth` > STABLE_GROWTH; unknown counts as no)."""
    growth = row.get("backlog_growth")
    return growth is not None and growth > STABLE_GROWTH


def _latency(row: Row, metric: str, stable: bool) -> float:
    """The row's latency; infinite when `stable` and its backlog grew."""
    return math.inf if stable and backlog_grew(row) else float(row[metric])


def _fmt(value: Any, width: int) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            text = "-"
        elif value == 0 or 1e-3 <= abs(value) < 1e5:
            text = f"{value:.4g}"
        else:
            text = f"{value:.3e}"
    else:
        text = str(value)
    return text.rjust(width)


def format_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """Fixed-width text table of `columns` (missing values print as '-')."""
    cells = [[_fmt(row.get(c, math.nan), 0).strip() for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def format_comparisons(comparisons: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for c in comparisons:
        ratio = c["ratio"]
        text = "n/a" if math.isnan(ratio) else ("inf" if math.isinf(ratio) else f"{ratio:.2f}x")
        bound = {"": "", ">=": " (lower bound)", "<=": " (upper bound)", "?": " (both censored)"}[c["bound"]]
        lines.append(f"{c['system']:>14} vs {c['baseline']:<14} target {c['multiple']:g}x = "
                     f"{c['target']:.4g} s/tok: {c['rate_a']:.3g} vs {c['rate_b']:.3g} prog/s -> "
                     f"{text}{bound}{' [stable points]' if c.get('stable') else ''}")
    return "\n".join(lines)


def write_json(path: str | Path, payload: Any) -> None:
    """Strict JSON: NaN becomes null and infinities the strings "inf" / "-inf"."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_plain(payload), indent=2, allow_nan=False) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "as_dict"):
        return _plain(value.as_dict())
    return value


def plot_latency(rows: Iterable[Row], out: str | Path, title: str = "", key: str = "policy",
                 metrics: Sequence[tuple[str, str]] = (("mean_latency", "mean"), ("p95_latency", "P95")),
                 ylim_multiple: float | None = 12.0, targets: Mapping[str, float] | None = None,
                 target_label: str = "latency target") -> None:
    """Latency vs arrival rate, one line per system, one panel per metric (like the paper's Fig. 12).

    `ylim_multiple` caps the y axis at that multiple of the lowest latency shown, so a baseline that
    explodes past saturation does not flatten every other curve (points above the cap are clipped);
    below the cap the axis just fits the highest point. `targets` (metric -> s/token) draws the latency
    target of the throughput comparison as a dashed line: where a curve crosses it is that system's
    sustainable rate. Points whose backlog grew (`backlog_growth` > STABLE_GROWTH) are drawn hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = series(rows, key)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
    for ax, (metric, label) in zip(axes[0], metrics):
        shown: list[float] = []
        any_past = False
        for name, group in groups.items():
            xs = [r["rate"] for r in group]
            ys = [float(r[metric]) for r in group]
            line, = ax.plot(xs, ys, marker="o", ms=4, label=name)
            past = [(x, y) for x, y, r in zip(xs, ys, group) if backlog_grew(r)]
            if past:  # hollow markers: the backlog grew, so the point is not a steady state
                ax.plot(*zip(*past), ls="", marker="o", ms=6, mfc="white", mec=line.get_color())
                any_past = True
            shown += [y for y in ys if math.isfinite(y) and y > 0]
        if any_past:
            ax.plot([], [], ls="", marker="o", ms=6, mfc="white", mec="gray", label="backlog grew")
        target = (targets or {}).get(metric)
        if target is not None and math.isfinite(target):
            ax.axhline(target, color="gray", ls="--", lw=1, label=target_label)
            shown.append(target)
        if ylim_multiple and shown:
            ax.set_ylim(0, min(ylim_multiple * min(shown), 1.08 * max(shown)))
        ax.set_xlabel("arrival rate (programs/s)")
        ax.set_ylabel(f"{label} latency (s/token)")
        ax.set_title(f"{title} — {label}" if title else label)
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def fleet_ratios(rows: list[Row], baselines: tuple[str, ...],
                 metric: str = "programs_per_hour") -> list[dict[str, Any]]:
    """`metric` of every policy over each baseline's, at each concurrency (each pair of baselines once:
    the later-listed one over the earlier)."""
    by = {(r["policy"], r["concurrency"]): r[metric] for r in rows}
    out = []
    for k, base in enumerate(baselines):
        for (policy, c), value in by.items():
            b = by.get((base, c))
            if policy not in baselines[:k + 1] and b:
                out.append({"system": policy, "baseline": base, "concurrency": c, "metric": metric,
                            "ratio": value / b})
    return out


def format_fleet(payload: dict[str, Any], columns: Sequence[str]) -> str:
    """The fleet table, the working-set fit and every ratio (payload: `config.working_set_fit`,
    `results`, `comparisons`)."""
    fit = payload["config"]["working_set_fit"]
    lines = [format_table(payload["results"], columns), "",
             f"programs whose full histories fit in the KV cache at once: {fit:.1f} (1x residency)",
             "ratios:"]
    for c in payload["comparisons"]:
        lines.append(f"{c['system']:>14} vs {c['baseline']:<14} at concurrency {c['concurrency']:>4} "
                     f"({c['concurrency'] / fit:.1f}x): {c['ratio']:.2f}x {c['metric'].replace('_', ' ')}")
    return "\n".join(lines)


def plot_fleet(rows: list[Row], out: str | Path, title: str = "", fit: float | None = None) -> None:
    """Programs per hour and mean program completion time against concurrency, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.0))
    for name, group in series(rows, x="concurrency").items():
        xs = [r["concurrency"] for r in group]
        axes[0].plot(xs, [r["programs_per_hour"] for r in group], marker="o", ms=4, label=name)
        axes[1].plot(xs, [r["mean_jct"] for r in group], marker="o", ms=4, label=name)
    for ax, label in zip(axes, ("programs per hour", "mean program completion time (s)")):
        if fit:
            ax.axvline(fit, color="gray", ls="--", lw=1, label="1x: full histories fit")
        ax.set_xlabel("programs in flight (concurrency)")
        ax.set_ylabel(label)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(bottom=0)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
