"""Plots bench/soak.csv (written by bench/soak.sh): p50/p99 latency, achieved rate and errors,
RSS, and open file descriptors over time, one panel each. Usage: soak_plot.py CSV PNG"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source, target = sys.argv[1], sys.argv[2]
with open(source) as f:
    rows = list(csv.DictReader(f))
t = [float(r["t_s"]) / 60 for r in rows]
column = lambda name: [float(r[name]) for r in rows]  # noqa: E731

figure, (latency, traffic, rss, fds) = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
latency.plot(t, column("p99_ms"), label="p99", color="tab:red")
latency.plot(t, column("p50_ms"), label="p50", color="tab:blue")
latency.set_ylabel("latency per window (ms)")
latency.set_ylim(bottom=0)
latency.legend(loc="upper right")
latency.set_title("fountain serve (all roles, one process): mixed traffic through the gateway")

traffic.plot(t, column("rate_per_s"), color="tab:green", label="answered req/s")
traffic.set_ylabel("req/s")
traffic.set_ylim(0, max(column("rate_per_s")) * 1.2)
errors = traffic.twinx()
errors.bar(t, column("errors"), width=0.05, color="tab:red", label="errors")
errors.set_ylabel("errors per window")
errors.set_ylim(bottom=0, top=max(1, max(column("errors")) * 1.2))
traffic.legend(loc="lower left")
errors.legend(loc="lower right")

rss.plot(t, [v / 1024 for v in column("rss_kb")], color="tab:purple", label="RSS")
if "rss_anon_kb" in rows[0]:
    rss.plot(t, [v / 1024 for v in column("rss_anon_kb")], color="tab:orange", label="anonymous (heap, stacks)")
    rss.plot(t, [v / 1024 for v in column("rss_file_kb")], color="tab:gray", label="mapped files")
    rss.legend(loc="lower right")
rss.set_ylabel("memory (MB)")
rss.set_ylim(bottom=0)

fds.plot(t, column("fds"), color="tab:brown", label="all")
if "fd_sockets" in rows[0]:
    fds.plot(t, column("fd_sockets"), color="tab:cyan", label="sockets")
    fds.plot(t, column("fd_files"), color="tab:olive", label="files")
    fds.legend(loc="lower right")
fds.set_ylabel("open fds")
fds.set_ylim(bottom=0)
fds.set_xlabel("minutes")

for axis in (latency, traffic, rss, fds):
    axis.grid(alpha=0.3)
figure.tight_layout()
figure.savefig(target, dpi=100)
print(f"wrote {target}")
