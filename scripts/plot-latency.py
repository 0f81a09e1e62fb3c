#!/usr/bin/env python3
"""Draws the steady-state latency distributions of a `make bench` run.

Reads the per-event CSVs the bench writes (`<dir>/steady-<rate>-<repetition>-<relay>.csv`,
column `latency_ms`) and writes `<dir>/latency-<rate>.png`: for each relay, latency against
percentile (log scale), all repetitions pooled; one picture per producer rate.
Usage: plot-latency.py [dir]   (default target/bench). Needs matplotlib.
"""

import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAME = re.compile(r"^steady-(?P<rate>\d+)-(?P<repetition>\d+)-(?P<relay>.+)\.csv$")
PERCENTILES = [50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100]


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def main():
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench")
    series = defaultdict(lambda: defaultdict(list))  # rate -> relay -> latencies
    for path in sorted(directory.glob("steady-*.csv")):
        match = NAME.match(path.name)
        if not match:
            continue
        relay = match["relay"]  # the bench's label with " ()" turned into "_"
        if "__" in relay:
            name, detail = relay.split("__", 1)
            relay = f"{name} ({detail.strip('_')})"
        relay = relay.replace("_", " ").replace("-order-tx", " + order tx")
        with path.open() as file:
            values = [float(row["latency_ms"]) for row in csv.DictReader(file)]
        series[int(match["rate"])][relay].extend(values)
    if not series:
        sys.exit(f"no steady-*.csv files in {directory}")
    for rate, relays in sorted(series.items()):
        figure, axes = plt.subplots(figsize=(9, 5.5))
        positions = range(len(PERCENTILES))
        for relay, values in sorted(relays.items()):
            values.sort()
            axes.plot(
                positions,
                [percentile(values, p) for p in PERCENTILES],
                marker="o",
                label=f"{relay} (n={len(values):,})",
            )
        axes.set_xticks(list(positions), [f"p{p:g}" if p < 100 else "max" for p in PERCENTILES])
        axes.set_yscale("log")
        axes.set_ylabel("commit to arrival, ms (log scale)")
        axes.set_title(f"Steady state at {rate:,} events/s: latency by percentile")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
        figure.tight_layout()
        out = directory / f"latency-{rate}.png"
        figure.savefig(out, dpi=110)
        plt.close(figure)
        print(out)


if __name__ == "__main__":
    main()
