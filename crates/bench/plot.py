#!/usr/bin/env python3
"""Plots wsgate-bench results: latency percentiles against delivered rate.

    plot.py [options] -o OUT RESULT.json[=LABEL] ...

Each RESULT.json is what `wsgate-bench <scenario> ... --json` wrote: one report object
(`{"scenario", "params", "results": {...}}`), a JSON array of them, or JSON Lines. A
`sweep` report contributes one point per step (`results.steps[]`: `rate`,
`deliveries_per_s`, `lost`, latency from `detail.latency_ms` or the step's `p50_ms`,
`p99_ms`, `p99_9_ms`), a `fanout` or `rooms` report one point (`results.offered_rate`,
`deliveries_per_s`, `lost`, `latency_ms.{p50,p90,p99,p99_9,max}`). Points are grouped by
target label (the file's `=LABEL`, else `--label`, else the report's `label`, else its
`params.target` and the file name); points of one label at the same offered rate
(repeated runs) are reduced to their median, with the min..max spread drawn as error bars
("the noise").

The figure has one colour per percentile (p50, p90, p99, p99.9; `--percentiles`) and one
line style and marker per target, delivered rate (deliveries/s) on x, latency on a log y
axis. Steps that lost messages are ringed in red. OUT gets both an SVG and a PNG:
`-o docs/img/fanout` writes fanout.svg and fanout.png (an .svg or .png suffix on OUT is
replaced by both). `--panels` draws one panel per percentile instead (colour and line
style per target), easier to read with many targets; `--log-x` for rates spanning decades.
`--table` also prints the plotted points as a Markdown table.

Needs matplotlib (crates/bench/plot.sh makes a venv with it in target/plotenv).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Percentile key -> (legend text, accepted spellings in the JSON, in order of preference).
PERCENTILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "p50": ("p50", ("p50", "p50_ms", "median", "50")),
    "p90": ("p90", ("p90", "p90_ms", "90")),
    "p99": ("p99", ("p99", "p99_ms", "99")),
    "p999": ("p99.9", ("p999", "p99_9", "p99.9", "p999_ms", "p99_9_ms", "99.9")),
    "max": ("max", ("max", "max_ms")),
}
RATE_KEYS = (
    "deliveries_per_s",
    "deliveries_per_sec",
    "delivered_per_sec",
    "deliveries_per_s",
    "delivery_rate",
    "deliveries_rate",
)
OFFERED_KEYS = ("offered_rate", "offered", "rate", "offered_per_sec", "target_rate")
LOST_KEYS = ("lost", "lost_deliveries", "missing")
# Container keys tried for latency, with the factor that turns their unit into ms.
LATENCY_CONTAINERS = (
    ("latency_ms", 1.0),
    ("latency_us", 1e-3),
    ("latency_ns", 1e-6),
    ("latency", 1.0),
)
STEP_LIST_KEYS = ("steps", "points", "results")

COLOURS = {
    "p50": "#1b9e77",
    "p90": "#7570b3",
    "p99": "#d95f02",
    "p999": "#e7298a",
    "max": "#666666",
}
STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


@dataclass
class Point:
    """One measured step: offered load, delivered rate, latency percentiles (ms)."""

    offered: float | None
    delivered: float
    latency: dict[str, float]
    lost: float = 0.0


@dataclass
class Series:
    """All points of one target label, in input order."""

    label: str
    points: list[Point] = field(default_factory=list)


def first(d: dict[str, Any], keys: Iterable[str]) -> Any:
    """The value of the first key of `keys` present (and not null) in `d`."""
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def number(v: Any) -> float | None:
    """`v` as a finite float, or None."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def latency_of(obj: dict[str, Any]) -> dict[str, float]:
    """Percentiles in ms from a result or step object, whatever the container's unit."""
    for key, factor in LATENCY_CONTAINERS:
        box = obj.get(key)
        if not isinstance(box, dict):
            continue
        # A `latency` object may itself carry a unit suffix on its keys (p99_us, ...).
        out: dict[str, float] = {}
        for pk, (_, names) in PERCENTILES.items():
            v = number(first(box, names))
            f = factor
            if v is None:
                for suffix, sf in (("_us", 1e-3), ("_ns", 1e-6)):
                    v = number(first(box, [n + suffix for n in names if not n.endswith("_ms")]))
                    if v is not None:
                        f = sf
                        break
            if v is not None:
                out[pk] = v * f
        if out:
            return out
    # Flat fields: p99_ms, latency_p99_ms, ...
    out = {}
    for pk, (_, names) in PERCENTILES.items():
        for n in names:
            base = n[:-3] if n.endswith("_ms") else n
            v = number(first(obj, (f"{base}_ms", f"latency_{base}_ms")))
            if v is not None:
                out[pk] = v
                break
    return out


def point_of(obj: dict[str, Any]) -> Point | None:
    """A point from one step (or a top-level fanout result); None without the fields."""
    delivered = number(first(obj, RATE_KEYS))
    if delivered is None and isinstance(obj.get("deliveries"), dict):
        delivered = number(first(obj["deliveries"], ("per_sec", "rate", *RATE_KEYS)))
    if delivered is None:
        return None
    lost = number(first(obj, LOST_KEYS))
    if lost is None and isinstance(obj.get("deliveries"), dict):
        lost = number(first(obj["deliveries"], LOST_KEYS))
    # A sweep step has summary fields (p50_ms, p99_ms, ...) and the full fan-out result
    # (with p90) under `detail`: take the detail, fill gaps from the summary.
    latency = latency_of(obj)
    detail = obj.get("detail")
    if isinstance(detail, dict):
        latency = {**latency, **latency_of(detail)}
    return Point(
        offered=number(first(obj, OFFERED_KEYS)),
        delivered=delivered,
        latency=latency,
        lost=lost or 0.0,
    )


def results_in(path: Path) -> list[dict[str, Any]]:
    """The result objects in a file: one object, an array, or JSON Lines."""
    text = path.read_text()
    try:
        doc = json.loads(text)
        docs = doc if isinstance(doc, list) else [doc]
    except json.JSONDecodeError:
        # JSON Lines; other lines (a warning that went to the same file) are skipped.
        docs = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    docs.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return [d for d in docs if isinstance(d, dict)]


def body_of(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of a report: wsgate-bench nests them under `results`."""
    inner = result.get("results")
    return inner if isinstance(inner, dict) else result


def label_of(result: dict[str, Any], path: Path) -> str:
    """The label a result names for itself, else its target and the file's name."""
    params = result.get("params") if isinstance(result.get("params"), dict) else {}
    for box in (result, body_of(result), params):
        v = first(box, ("label", "target_label", "name"))
        if isinstance(v, str) and v:
            return v
    target = first(result, ("target",)) or first(params, ("target",))
    if isinstance(target, str) and target:
        return f"{target} ({path.stem})"
    return path.stem


def points_in(result: dict[str, Any]) -> list[Point]:
    """The points of one result: its steps if it has any, else the result itself."""
    for key in STEP_LIST_KEYS:
        steps = result.get(key)
        if isinstance(steps, list):
            return [p for p in (point_of(s) for s in steps if isinstance(s, dict)) if p]
    p = point_of(result)
    return [p] if p else []


def load(specs: list[str], default_label: str | None) -> list[Series]:
    """Reads every `FILE[=LABEL]`; series in first-seen label order."""
    series: dict[str, Series] = {}
    for spec in specs:
        path_s, label = spec, None
        if "=" in spec and not Path(spec).exists():
            path_s, label = spec.split("=", 1)
        path = Path(path_s)
        if not path.is_file():
            sys.exit(f"plot.py: no such file: {path}")
        results = results_in(path)
        if not results:
            sys.exit(f"plot.py: no result object in {path}")
        for result in results:
            name = label or default_label or label_of(result, path)
            pts = points_in(body_of(result))
            if not pts:
                print(
                    f"plot.py: warning: {path}: a result without deliveries_per_sec "
                    f"(scenario {result.get('scenario')!r}) was skipped",
                    file=sys.stderr,
                )
                continue
            series.setdefault(name, Series(name)).points.extend(pts)
    return list(series.values())


@dataclass
class Agg:
    """The median of the repeated runs at one offered rate, with their spread."""

    offered: float | None
    runs: int
    delivered: float
    delivered_lo: float
    delivered_hi: float
    latency: dict[str, tuple[float, float, float]]  # key -> (median, min, max)
    lost: float  # the largest loss of any run


def aggregate(points: list[Point]) -> list[Agg]:
    """Groups points by offered rate (those without one stand alone) and takes medians."""
    groups: dict[Any, list[Point]] = {}
    for i, p in enumerate(points):
        key = round(p.offered, 6) if p.offered is not None else ("solo", i)
        groups.setdefault(key, []).append(p)
    out = []
    for pts in groups.values():
        lat: dict[str, tuple[float, float, float]] = {}
        for pk in PERCENTILES:
            vals = [p.latency[pk] for p in pts if pk in p.latency]
            if vals:
                lat[pk] = (statistics.median(vals), min(vals), max(vals))
        d = [p.delivered for p in pts]
        out.append(
            Agg(
                offered=pts[0].offered,
                runs=len(pts),
                delivered=statistics.median(d),
                delivered_lo=min(d),
                delivered_hi=max(d),
                latency=lat,
                lost=max(p.lost for p in pts),
            )
        )
    out.sort(key=lambda a: (a.offered if a.offered is not None else a.delivered, a.delivered))
    return out


def fmt_rate(v: float) -> str:
    """1234567 -> 1.23M."""
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}"
    return f"{v:.3g}"


def fmt_ms(v: float) -> str:
    """Milliseconds with about three significant digits, never in e-notation."""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def table(series: list[tuple[Series, list[Agg]]], pcts: list[str]) -> str:
    """The plotted points as a Markdown table."""
    head = ["target", "offered msgs/s", "runs", "delivered/s (min..max)"]
    head += [f"{PERCENTILES[p][0]} ms" for p in pcts] + ["lost (max)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, aggs in series:
        for a in aggs:
            spread = (
                f" ({fmt_rate(a.delivered_lo)}..{fmt_rate(a.delivered_hi)})" if a.runs > 1 else ""
            )
            cells = [
                s.label,
                fmt_rate(a.offered) if a.offered is not None else "–",
                str(a.runs),
                fmt_rate(a.delivered) + spread,
            ]
            for p in pcts:
                if p in a.latency:
                    med, lo, hi = a.latency[p]
                    cells.append(
                        fmt_ms(med) + (f" ({fmt_ms(lo)}..{fmt_ms(hi)})" if a.runs > 1 else "")
                    )
                else:
                    cells.append("–")
            cells.append(f"{a.lost:g}")
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def out_paths(out: str) -> list[Path]:
    """OUT with .svg and .png."""
    p = Path(out)
    if p.suffix.lower() in (".svg", ".png"):
        p = p.with_suffix("")
    return [p.with_name(p.name + ".svg"), p.with_name(p.name + ".png")]


TARGET_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def draw(ax: Any, series: list[tuple[Series, list[Agg]]], pcts: list[str], panels: bool) -> bool:
    """Draws every (target, percentile) line on `ax`; True if some point lost messages."""
    floor = 1e-3  # ms; a log axis cannot show 0
    any_loss = False
    for i, (_, aggs) in enumerate(series):
        style = STYLES[i % len(STYLES)]
        marker = MARKERS[i % len(MARKERS)]
        for pk in pcts:
            pts = [a for a in aggs if pk in a.latency]
            if not pts:
                continue
            colour = TARGET_COLOURS[i % len(TARGET_COLOURS)] if panels else COLOURS[pk]
            x = [a.delivered for a in pts]
            y = [max(a.latency[pk][0], floor) for a in pts]
            has_spread = any(a.runs > 1 for a in pts)
            yerr = [
                [y_ - max(a.latency[pk][1], floor) for a, y_ in zip(pts, y, strict=True)],
                [max(a.latency[pk][2], floor) - y_ for a, y_ in zip(pts, y, strict=True)],
            ]
            xerr = [
                [a.delivered - a.delivered_lo for a in pts],
                [a.delivered_hi - a.delivered for a in pts],
            ]
            ax.errorbar(
                x,
                y,
                yerr=yerr if has_spread else None,
                xerr=xerr if has_spread else None,
                color=colour,
                linestyle=style,
                marker=marker,
                markersize=5,
                linewidth=1.6,
                elinewidth=0.8,
                capsize=2,
                alpha=0.95,
            )
            lossy = [(x_, y_) for a, x_, y_ in zip(pts, x, y, strict=True) if a.lost > 0]
            if lossy:
                any_loss = True
                ax.scatter(
                    [p[0] for p in lossy],
                    [p[1] for p in lossy],
                    s=110,
                    facecolors="none",
                    edgecolors="red",
                    linewidths=1.4,
                    zorder=5,
                )
    return any_loss


def style_axes(ax: Any, log_x: bool, bound_ms: float | None) -> None:
    """Axis scales, labels, grid and the optional latency bound."""
    from matplotlib.ticker import FuncFormatter

    if bound_ms is not None:
        ax.axhline(bound_ms, color="black", linewidth=0.8, linestyle=(0, (2, 2)))
        ax.annotate(
            f"{bound_ms:g} ms",
            xy=(1, bound_ms),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
        )
    ax.set_yscale("log")
    if log_x:
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_rate(v) if v else "0"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(True, which="major", linewidth=0.6, alpha=0.5)
    ax.grid(True, which="minor", axis="y", linewidth=0.3, alpha=0.3)


def plot(
    series: list[tuple[Series, list[Agg]]],
    pcts: list[str],
    out: str,
    title: str | None,
    bound_ms: float | None,
    dpi: int,
    panels: bool,
    log_x: bool,
) -> list[Path]:
    """Draws the figure and writes OUT.svg and OUT.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    # Byte-stable SVGs, so regenerating an unchanged plot leaves git clean.
    plt.rcParams["svg.hashsalt"] = "wsgate-bench"
    plt.rcParams["svg.fonttype"] = "none"

    xlabel = "delivered rate (deliveries/s)"
    ylabel = "end-to-end latency (ms, log scale)"
    title = title or "wsgate-bench: latency percentiles against delivered rate"
    if panels:
        cols = 2 if len(pcts) > 1 else 1
        rows = math.ceil(len(pcts) / cols)
        fig, axes = plt.subplots(
            rows, cols, figsize=(6 * cols, 4.2 * rows), layout="constrained", squeeze=False
        )
        flat = list(axes.flat)
        any_loss = False
        for ax, pk in zip(flat, pcts, strict=False):
            any_loss |= draw(ax, series, [pk], panels=True)
            style_axes(ax, log_x, bound_ms)
            ax.set_title(PERCENTILES[pk][0])
        for ax in flat[len(pcts) :]:
            ax.set_visible(False)
        fig.supxlabel(xlabel)
        fig.supylabel(ylabel)
        fig.suptitle(title)
        legend_ax = flat[0]
    else:
        fig, ax = plt.subplots(figsize=(9, 5.6), layout="constrained")
        any_loss = draw(ax, series, pcts, panels=False)
        style_axes(ax, log_x, bound_ms)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        legend_ax = ax

    target_handles = [
        Line2D(
            [],
            [],
            color=TARGET_COLOURS[i % len(TARGET_COLOURS)] if panels else "black",
            linestyle=STYLES[i % len(STYLES)],
            marker=MARKERS[i % len(MARKERS)],
            markersize=5,
            label=s.label,
        )
        for i, (s, _) in enumerate(series)
    ]
    loss_handle = Line2D(
        [],
        [],
        linestyle="none",
        marker="o",
        markersize=9,
        markerfacecolor="none",
        markeredgecolor="red",
        label="messages lost",
    )
    if panels:
        legend_ax.legend(
            handles=target_handles + ([loss_handle] if any_loss else []),
            title="target",
            loc="upper left",
            fontsize=8,
        )
    else:
        pct_handles = [
            Line2D([], [], color=COLOURS[p], linewidth=3, label=PERCENTILES[p][0]) for p in pcts
        ]
        if any_loss:
            pct_handles.append(loss_handle)
        leg1 = legend_ax.legend(
            handles=target_handles, title="target", loc="upper left", fontsize=8
        )
        legend_ax.add_artist(leg1)
        legend_ax.legend(handles=pct_handles, title="percentile", loc="lower right", fontsize=8)
    if any(a.runs > 1 for _, aggs in series for a in aggs):
        fig.text(
            0.01,
            0.005,
            "points: median of repeated runs; bars: min..max",
            fontsize=7,
            color="#555555",
        )

    paths = out_paths(out)
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(paths[0], metadata={"Date": None})
    fig.savefig(paths[1], dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "files",
        nargs="+",
        metavar="FILE[=LABEL]",
        help="wsgate-bench --json output; =LABEL names the target (repeat a label to combine runs)",
    )
    ap.add_argument("-o", "--out", required=True, help="output path (writes .svg and .png)")
    ap.add_argument("--label", help="label for files given without =LABEL")
    ap.add_argument("--title", help="figure title")
    ap.add_argument(
        "--percentiles",
        default="p50,p90,p99,p999",
        help="comma-separated, from p50,p90,p99,p999,max (default: %(default)s)",
    )
    ap.add_argument("--bound-ms", type=float, help="draw a horizontal line at this latency")
    ap.add_argument("--dpi", type=int, default=150, help="PNG resolution (default: %(default)s)")
    ap.add_argument("--table", action="store_true", help="print the points as Markdown too")
    ap.add_argument(
        "--panels",
        action="store_true",
        help="one panel per percentile, one colour and line style per target",
    )
    ap.add_argument("--log-x", action="store_true", help="log scale for the delivered rate too")
    args = ap.parse_args(argv)

    pcts = [
        p.strip().replace("99.9", "999").replace("p99_9", "p999")
        for p in args.percentiles.split(",")
    ]
    bad = [p for p in pcts if p not in PERCENTILES]
    if bad or not pcts:
        ap.error(f"unknown percentile(s) {bad}; choose from {', '.join(PERCENTILES)}")

    series = load(args.files, args.label)
    if not series:
        print("plot.py: nothing to plot", file=sys.stderr)
        return 1
    aggregated = [(s, aggregate(s.points)) for s in series]
    if args.table:
        print(table(aggregated, pcts))
    for p in plot(
        aggregated, pcts, args.out, args.title, args.bound_ms, args.dpi, args.panels, args.log_x
    ):
        print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
