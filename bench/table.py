"""Prints the BENCHMARKS.md tables from a directory of palaver-bench JSON reports (bench/sweep.sh's output).

    python3 bench/table.py bench/results
"""

import json
import re
import sys
from pathlib import Path


def load(directory):
    reports = {}
    for path in sorted(Path(directory).glob("*.json")):
        text = path.read_text()
        if text.strip():  # a run still in progress has written nothing yet
            reports[path.stem] = json.loads(text)
    return reports


def ms(value):
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.1f} ms"


def latency(block):
    if not block or not block.get("count"):
        return "—"
    return f"{ms(block['p50_ms'])} / {ms(block['p90_ms'])} / {ms(block['p99_ms'])}"


def rate_rows(reports, scenario):
    pattern = re.compile(rf"^(?P<server>[a-z0-9]+)-{scenario}-(?P<rate>\d+)$")
    rows = []
    for name, report in reports.items():
        match = pattern.match(name)
        if match:
            rows.append((int(match["rate"]), match["server"], report))
    rows.sort(key=lambda row: (row[0], row[1] != "palaver"))
    for rate, server, report in rows:
        m = report["messages"]
        print(
            f"| {rate:,} | {server} | {m['delivered_per_s']:,.0f} | {latency(m['delivery_latency'])} "
            f"| {m['acked_ok']:,} / {m['sent']:,} | {latency(m['ack_latency'])} "
            f"| {m['missing_deliveries']} / {m['duplicate_deliveries']} |"
        )


def idle_rows(reports):
    for name, report in sorted(reports.items()):
        if "-idle-" not in name:
            continue
        c, mem = report["connect"], report.get("server_memory") or {}
        per_conn = mem.get("per_connection_bytes")
        print(
            f"| {name.split('-')[0]} | {c['connected']:,} / {c['attempted']:,} | {c['all_joined_s']:.1f} s "
            f"| {c['connect_rate_per_s']:,.0f}/s | {per_conn / 1000:.1f} KB |"
            if per_conn
            else f"| {name} | {c['connected']:,} | {c['all_joined_s']:.1f} s | — |"
        )


def main():
    reports = load(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    header = (
        "| sent/s | server | delivered/s | delivery p50 / p90 / p99 | acked ok / sent | ack p50 / p90 / p99 "
        "| missing / duplicate |\n| --- | --- | --- | --- | --- | --- | --- |"
    )
    for scenario in ("fanout", "durable", "cluster"):
        print(f"\n{scenario}\n\n{header}")
        rate_rows(reports, scenario)
    print(
        "\nidle\n\n| server | connected | all joined within | connections/s | RSS per connection |\n"
        "| --- | --- | --- | --- | --- |"
    )
    idle_rows(reports)


if __name__ == "__main__":
    main()
