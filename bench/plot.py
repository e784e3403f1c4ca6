"""Plots delivery latency against load for every server measured by bench/sweep.sh.

    python3 bench/plot.py bench/results bench/latency-vs-load.svg

Reads the palaver-bench JSON reports named <server>-<scenario>-<rate>.json and draws, per server and scenario,
the p50 and p99 delivery latency against the offered load (messages sent per second; each is delivered to every
other member of its room).
"""

import json
import pathlib
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(results: str, out: str) -> None:
    series = defaultdict(list)
    for path in sorted(pathlib.Path(results).glob("*.json")):
        parts = path.stem.split("-")
        if len(parts) < 3:
            continue
        server, scenario = parts[0], parts[1]
        report = json.loads(path.read_text())
        messages = report.get("messages")
        if not messages or not messages.get("delivery_latency", {}).get("count"):
            continue
        series[(scenario, server)].append(
            (
                report["config"]["rate"],
                messages["delivery_latency"]["p50_ms"],
                messages["delivery_latency"]["p99_ms"],
            )
        )
    scenarios = sorted({scenario for scenario, _ in series})
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.5), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        for (sc, server), points in sorted(series.items()):
            if sc != scenario:
                continue
            points.sort()
            x = [p[0] / 1000 for p in points]
            ax.plot(x, [p[2] for p in points], marker="o", label=f"{server} p99")
            ax.plot(x, [p[1] for p in points], marker=".", linestyle="--", label=f"{server} p50")
        ax.set_title(scenario)
        ax.set_xlabel("messages sent per second (thousands)")
        ax.set_ylabel("delivery latency (ms, log)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
