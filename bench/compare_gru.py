#!/usr/bin/env python3
"""Compares the Gru runs of bench/gru.sh: per scenario and offered rate, deliveries per server
CPU-second and p99 of wsim's Gru front-end and of Node's socket.io, and their ratio."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = {}
knees = {}
for r in rows:
    key = (r.get("scenario"), r.get("group_size"))
    if "knee_rate" in r:
        knees[(key, r["label"])] = r["knee_rate"]
        continue
    steps.setdefault(key, {}).setdefault(r["offered_rate"], {})[r["label"]] = r

print("# Gru: wsim vs Node socket.io 4.x (same client, same rooms)\n")
print("| G | offered msg/s | deliveries/s wsim | node | deliveries per CPU-s wsim | node | ratio | p99 ms wsim | node | lost wsim/node |")
print("|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(steps, key=lambda k: (k[0], k[1])):
    for rate in sorted(steps[key]):
        s = steps[key][rate]
        w, n = s.get("wsim-gru"), s.get("node-socket.io")
        def f(r, k, fmt="{:.0f}"):
            return fmt.format(r[k]) if r and r.get(k) is not None else "-"
        ratio = "-"
        if w and n and w.get("deliveries_per_cpu_s") and n.get("deliveries_per_cpu_s"):
            ratio = "{:.1f}x".format(w["deliveries_per_cpu_s"] / n["deliveries_per_cpu_s"])
        print(f"| {key[1]} | {rate:.0f} | {f(w,'delivered_per_sec')} | {f(n,'delivered_per_sec')} | "
              f"{f(w,'deliveries_per_cpu_s')} | {f(n,'deliveries_per_cpu_s')} | {ratio} | "
              f"{f(w,'p99_ms','{:.1f}')} | {f(n,'p99_ms','{:.1f}')} | {f(w,'lost')}/{f(n,'lost')} |")
print()
for (key, label), k in sorted(knees.items(), key=lambda x: (x[0][0][1], x[0][1])):
    print(f"- knee G={key[1]} {label}: {k if k is not None else 'below the first step'} msg/s offered")

# Each server at its own knee: the highest offered rate with p99 <= 100 ms and nothing lost.
print("\nAt each server's knee (highest offered rate with p99 <= 100 ms and nothing lost):\n")
print("| G | wsim msg/s | wsim deliveries per CPU-s | node msg/s | node deliveries per CPU-s | ratio |")
print("|---|---|---|---|---|---|")
for key in sorted(steps, key=lambda k: (k[0], k[1])):
    best = {}
    for rate in sorted(steps[key]):
        for label, r in steps[key][rate].items():
            if r.get("lost") == 0 and (r.get("p99_ms") or 1e9) <= 100 and r.get("deliveries_per_cpu_s"):
                best[label] = r
    w, n = best.get("wsim-gru"), best.get("node-socket.io")
    if w and n:
        ratio = w["deliveries_per_cpu_s"] / n["deliveries_per_cpu_s"]
        print(f"| {key[1]} | {w['offered_rate']:.0f} | {w['deliveries_per_cpu_s']:.0f} | "
              f"{n['offered_rate']:.0f} | {n['deliveries_per_cpu_s']:.0f} | {ratio:.1f}x |")
