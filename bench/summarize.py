#!/usr/bin/env python3
"""Turns bench/results/<date>-<backend>.json (JSON lines from wsim-bench) into a markdown summary
(the Gru comparison, <date>-gru.json, has its own: compare_gru.py)."""
import json
import pathlib
import sys

out_dir, date = pathlib.Path(sys.argv[1]), sys.argv[2]
print(f"# wsim benchmark, {date}\n")
print("Server pinned to CPU 0, wsim-bench to CPU 1 (`make bench`), 100-byte payloads.\n")
for path in sorted(out_dir.glob(f"{date}-*.json")):
    backend = path.stem[len(date) + 1:]
    if backend == "gru":
        continue  # bench/gru.sh summarizes its own runs (compare_gru.py)
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    print(f"## {backend}\n")
    for r in rows:
        if r.get("scenario") == "idle":
            per = r.get("rss_per_connection_bytes")
            cpu = r.get("idle_cpu_percent")
            print(f"- idle: {r['connections']} connections, "
                  f"{per / 1024:.2f} KiB server RSS per connection, " if per is not None else "- idle: ",
                  end="")
            print(f"idle CPU {cpu:.2f} %" if cpu is not None else "", "; ".join(r.get("notes") or []))
    print()
    print("| scenario | G | offered/s | sent/s | delivered/s | lost | dup | p50 ms | p99 ms | max ms | server CPU s | deliveries / CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "offered_rate" not in r:
            continue
        per_cpu = r.get("deliveries_per_cpu_s")
        cpu = r.get("server_cpu_s")
        print(f"| {r['scenario']} | {r.get('group_size') or ''} | {r['offered_rate']:.0f} | {r['send_rate']:.0f} | "
              f"{r['delivered_per_sec']:.0f} | {r['lost']} | {r['duplicated']} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['max_ms']:.2f} | {cpu if cpu is None else f'{cpu:.2f}'} | "
              f"{'' if per_cpu is None else f'{per_cpu:.0f}'} |")
    knees = [r for r in rows if "knee_rate" in r]
    if knees:
        print()
        for k in knees:
            g = f" G={k['group_size']}" if k.get("group_size") else ""
            rate = k.get("knee_rate")
            bound = "" if k.get("knee_reached", True) else "at least "
            print(f"- knee {k['scenario']}{g}: {'below the first step' if rate is None else f'{bound}{rate:.0f} msg/s offered'}")
    print()
