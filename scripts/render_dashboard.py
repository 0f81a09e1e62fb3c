#!/usr/bin/env python3
"""Renders deploy/grafana/outbox-dashboard.json as a PNG: every panel's queries run against a
real Prometheus over a time window and drawn where the dashboard places the panel (its
gridPos). Grafana itself is not installable here (no Debian or PyPI package), so this is the
dashboard's content and layout, not Grafana's look. Used by scripts/dashboard-picture.sh."""

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402


def query_range(prometheus, expr, start, end, step):
    params = urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step}
    )
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as answer:
        body = json.load(answer)
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    return body["data"]["result"]


def legend(template, labels, expr):
    if not template:
        return ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or expr
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dashboard", default="deploy/grafana/outbox-dashboard.json")
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--start", type=float, required=True, help="Unix seconds")
    parser.add_argument("--end", type=float, required=True, help="Unix seconds")
    parser.add_argument("--step", default="2")
    parser.add_argument("--out", default="docs/dashboard.png")
    parser.add_argument("--note", default="", help="a line under the title")
    args = parser.parse_args()

    with open(args.dashboard, encoding="utf-8") as file:
        dashboard = json.load(file)
    panels = [p for p in dashboard["panels"] if p.get("type") == "timeseries"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)

    plt.style.use("dark_background")
    figure = plt.figure(figsize=(20, rows * 0.42), dpi=80)
    grid = GridSpec(rows, 24, figure=figure, hspace=2.2, wspace=1.2, top=0.94, bottom=0.02)
    title = dashboard.get("title", "dashboard")
    window = datetime.fromtimestamp(args.start, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figure.suptitle(f"{title}\n{window}, {int(args.end - args.start)} s. {args.note}", fontsize=13)
    empty = 0
    for panel in panels:
        pos = panel["gridPos"]
        axes = figure.add_subplot(grid[pos["y"] : pos["y"] + pos["h"] - 1, pos["x"] : pos["x"] + pos["w"]])
        axes.set_title(panel["title"], fontsize=10, loc="left")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        drawn = 0
        for target in panel.get("targets", []):
            for series in query_range(args.prometheus, target["expr"], args.start, args.end, args.step):
                points = [
                    (datetime.fromtimestamp(float(t), timezone.utc), float(v))
                    for t, v in series["values"]
                    if v not in ("NaN", "+Inf", "-Inf")
                ]
                if not points:
                    continue
                times, values = zip(*points)
                axes.plot(times, values, linewidth=1.4,
                          label=legend(target.get("legendFormat"), series["metric"], target["expr"]))
                drawn += 1
        if drawn == 0:
            empty += 1
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes, alpha=0.6)
        else:
            axes.legend(fontsize=7, loc="upper left")
        if unit:
            axes.set_ylabel(unit, fontsize=8)
        axes.set_xlim(
            datetime.fromtimestamp(args.start, timezone.utc),
            datetime.fromtimestamp(args.end, timezone.utc),
        )
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.2)
    figure.savefig(args.out, bbox_inches="tight")
    print(f"wrote {args.out}: {len(panels)} panels, {empty} without data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
