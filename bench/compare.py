#!/usr/bin/env python3
"""Compares two servers measured in one run with the same wsim-bench client (bench/gru.sh,
bench/entry.sh). Usage: compare.py RESULTS.json LABEL_A LABEL_B TITLE

Prints, per scenario and offered rate, deliveries per second, deliveries per server CPU-second and
p99 of both and the ratio A/B; each one's knee; each at its own knee; and idle memory per
connection when the run has idle rows."""
import json
import sys

path, a_label, b_label, title = sys.argv[1:5]
rows = [json.loads(l) for l in open(path) if l.strip()]
steps, knees, idle = {}, {}, {}
for r in rows:
    if r.get("scenario") == "idle":
        idle[r["label"]] = r
        continue
    key = (r.get("scenario"), r.get("group_size"))
    if "knee_rate" in r:
        knees[(key, r["label"])] = r["knee_rate"]
        continue
    steps.setdefault(key, {}).setdefault(r["offered_rate"], {})[r["label"]] = r


def f(r, k, fmt="{:.0f}"):
    return fmt.format(r[k]) if r and r.get(k) is not None else "-"


def name(key):
    return key[0] if not key[1] else f"{key[0]} {key[1]}"


print(f"# {title}\n")
if idle:
    print("| idle | connections | server RSS per connection KiB | idle CPU % |")
    print("|---|---|---|---|")
    for label in (a_label, b_label):
        r = idle.get(label)
        if r:
            kib = r["rss_per_connection_bytes"] / 1024 if r.get("rss_per_connection_bytes") else None
            print(f"| {label} | {r['connections']} | {f({'k': kib}, 'k', '{:.1f}')} | {f(r, 'idle_cpu_percent', '{:.2f}')} |")
    a, b = idle.get(a_label), idle.get(b_label)
    if a and b and a.get("rss_per_connection_bytes") and b.get("rss_per_connection_bytes"):
        print(f"\nidle memory per connection {a_label}/{b_label}: "
              f"{a['rss_per_connection_bytes'] / b['rss_per_connection_bytes']:.2f}x\n")

print(f"| scenario | offered msg/s | deliveries/s {a_label} | {b_label} | deliveries per CPU-s {a_label} | {b_label} | ratio | p99 ms {a_label} | {b_label} | lost |")
print("|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(steps, key=lambda k: (k[0], k[1] or 0)):
    for rate in sorted(steps[key]):
        s = steps[key][rate]
        a, b = s.get(a_label), s.get(b_label)
        ratio = "-"
        if a and b and a.get("deliveries_per_cpu_s") and b.get("deliveries_per_cpu_s"):
            ratio = "{:.2f}x".format(a["deliveries_per_cpu_s"] / b["deliveries_per_cpu_s"])
        print(f"| {name(key)} | {rate:.0f} | {f(a,'delivered_per_sec')} | {f(b,'delivered_per_sec')} | "
              f"{f(a,'deliveries_per_cpu_s')} | {f(b,'deliveries_per_cpu_s')} | {ratio} | "
              f"{f(a,'p99_ms','{:.1f}')} | {f(b,'p99_ms','{:.1f}')} | {f(a,'lost')}/{f(b,'lost')} |")
print()
for (key, label), k in sorted(knees.items(), key=lambda x: (x[0][0][0], x[0][0][1] or 0, x[0][1])):
    print(f"- knee {name(key)} {label}: {k if k is not None else 'below the first step'} msg/s offered")

print("\nAt each server's knee (highest offered rate with p99 <= 100 ms and nothing lost):\n")
print(f"| scenario | {a_label} msg/s | deliveries per CPU-s | {b_label} msg/s | deliveries per CPU-s | ratio |")
print("|---|---|---|---|---|---|")
for key in sorted(steps, key=lambda k: (k[0], k[1] or 0)):
    best = {}
    for rate in sorted(steps[key]):
        for label, r in steps[key][rate].items():
            if r.get("lost") == 0 and (r.get("p99_ms") or 1e9) <= 100 and r.get("deliveries_per_cpu_s"):
                best[label] = r
    a, b = best.get(a_label), best.get(b_label)
    if a and b:
        ratio = a["deliveries_per_cpu_s"] / b["deliveries_per_cpu_s"]
        print(f"| {name(key)} | {a['offered_rate']:.0f} | {a['deliveries_per_cpu_s']:.0f} | "
              f"{b['offered_rate']:.0f} | {b['deliveries_per_cpu_s']:.0f} | {ratio:.2f}x |")
