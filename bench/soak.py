"""The soak's load and sampler: mixed traffic through the gateway at a steady rate against one
`fountain serve` process, a CSV row per window. See soak.sh."""

import asyncio
import csv
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "faults"))
from faultlib import (Fountain, Load, Request, WebhookSink, acknowledged, call, find_elements, log,  # noqa: E402
                      must, open_fds, fds_by_kind, pct, rss_kb, setup_identities, wait_for_deliveries)

binary, work, out_csv = sys.argv[1], sys.argv[2], sys.argv[3]
base_port = int(os.environ.get("BENCH_PORT", "18300"))
seconds = float(os.environ.get("BENCH_SECONDS", "600"))
window = float(os.environ.get("BENCH_WINDOW", "5"))
rate = float(os.environ.get("BENCH_RATE", "150"))
bcrypt_cost = os.environ.get("BENCH_BCRYPT_COST", "12")

# The step-up token must outlive the run (twofa allows up to 3600 s, kms caps it at the access
# token lifetime), and so must the users' tokens.
ttl = str(max(900, int(seconds) + 300))
fountain = Fountain(binary, work, base_port, extra_env={
    "FOUNTAIN_ROLES__KMS__BCRYPT_COST": bcrypt_cost,
    "FOUNTAIN_ROLES__KMS__ACCESS_TOKEN_TTL_SECONDS": ttl,
    "FOUNTAIN_ROLES__TWOFA__STEP_UP_TTL_SECONDS": ttl,
})
try:
    fountain.create_admin("root")
    fountain.start_all()
    fountain.wait_ready(["gateway", "kms", "secrets", "notify", "twofa", "search", "sequence"])
    gw, pid = fountain.gateway, fountain.pid("all")
    sink = WebhookSink()
    traffic = setup_identities(gw, sink)
    api_key = must(call("POST", gw + "/kms/keys", {"service_name": "billing"}, traffic.mfa), "api key")["api_key"]

    # Per second at 150 req/s: 30 sequence writes, 30 searches, 25 secrets reads, 15 kms key
    # listings, 5 API-key verifications (kms limits them per client address), 20 notify
    # publishes, 24 twofa status reads, 1 login (bcrypt at the production cost); and a secret
    # rotation every 30 s beside it.
    share = {"sequence write": 30, "search": 30, "secrets read": 25, "kms keys": 15, "key verify": 5,
             "notify publish": 20, "twofa status": 24, "login": 1}
    kinds = {
        "sequence write": traffic.sequence_write("sequence write", 1),
        "search": traffic.search("search"),
        "secrets read": traffic.secrets_read("secrets read"),
        "kms keys": traffic.read("kms keys", "/kms/keys", traffic.admin),
        "key verify": Request("key verify", lambda n: ("POST", "/kms/keys/verify", {"api_key": api_key}, traffic.writer)),
        "notify publish": traffic.publish("notify publish"),
        "twofa status": traffic.read("twofa status", "/twofa/2fa/status", traffic.writer),
        "login": traffic.login("login"),
    }
    # One round of 150 interleaved: each kind spread evenly over the second.
    slots = sorted((i / count, name) for name, count in share.items() for i in range(count))
    round_ = [kinds[name] for _, name in slots]
    mixes = [(rate, round_), (1 / 30, [traffic.rotate("rotation")])]
    rows = []

    async def sample(load):
        """Every `window` seconds: the requests answered in that window, their errors and
        latencies, the process's RSS and open file descriptors."""
        seen, next_at = 0, window
        while next_at <= seconds + window / 2:
            await asyncio.sleep(max(0.0, next_at - load.now()))
            done = load.records[seen:]
            seen += len(done)
            latencies = [r.latency * 1000 for r in done]
            errors = [r for r in done if not r.ok]
            rows.append({
                "t_s": round(next_at, 1), "requests": len(done), "errors": len(errors),
                "rate_per_s": round(len(done) / window, 1),
                "p50_ms": round(pct(latencies, 50), 2), "p99_ms": round(pct(latencies, 99), 2),
                "max_ms": round(max(latencies, default=0), 2),
                "rss_kb": rss_kb(pid), "rss_anon_kb": rss_kb(pid, "RssAnon"), "rss_file_kb": rss_kb(pid, "RssFile"),
                "fds": open_fds(pid),
                **dict(zip(("fd_sockets", "fd_files", "fd_other"), fds_by_kind(pid))),
                "error_statuses": " ".join(sorted({str(r.status) for r in errors})),
            })
            if len(rows) % 12 == 0:
                r = rows[-1]
                log(f"{r['t_s']:6.0f} s: {r['rate_per_s']} req/s, p99 {r['p99_ms']} ms, errors so far "
                    f"{sum(x['errors'] for x in rows)}, RSS {r['rss_kb'] // 1024} MB, fds {r['fds']}")
            next_at += window

    log(f"soak: {rate:.0f} req/s for {seconds:.0f} s through the gateway at {gw} (pid {pid}), "
        f"RSS at start {rss_kb(pid) // 1024} MB, fds {open_fds(pid)}")
    load = Load(gw, mixes, timeout=30)
    started = time.monotonic()
    records = asyncio.run(load.run(seconds, sample))
    elapsed = time.monotonic() - started
    with open(out_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    errors = [r for r in records if not r.ok]
    by_kind = {}
    for r in errors:
        by_kind.setdefault((r.kind, r.status), []).append(r)
    acked_elements = acknowledged(records, {"sequence write"})
    acked_events = acknowledged(records, {"notify publish"})
    acked_versions = acknowledged(records, {"rotation"})
    found, _ = find_elements(gw, traffic.writer, "action", acked_elements)
    events, versions, _ = wait_for_deliveries(sink, acked_events, acked_versions)
    minute = [r for r in rows if r["t_s"] <= 60]
    last = [r for r in rows if r["t_s"] > rows[-1]["t_s"] - 60]
    first_lat = [r.latency * 1000 for r in records if r.sent < 60]
    last_lat = [r.latency * 1000 for r in records if r.sent >= seconds - 60]
    print()
    print(f"requests: {len(records)} in {elapsed:.0f} s (target {rate:.0f}/s = {int(rate * seconds)}; achieved "
          f"{len(records) / seconds:.1f}/s; largest lateness of a send {load.behind * 1000:.0f} ms)")
    print(f"errors: {len(errors)}" + "".join(f"; {kind} {status}×{len(rs)} ({rs[0].error[:120] if rs[0].error else ''})"
                                           for (kind, status), rs in sorted(by_kind.items())))
    print(f"p50 / p99 first minute {pct(first_lat, 50):.1f} / {pct(first_lat, 99):.1f} ms, "
          f"last minute {pct(last_lat, 50):.1f} / {pct(last_lat, 99):.1f} ms")
    print(f"RSS first window {rows[0]['rss_kb'] / 1024:.1f} MB, first minute max {max(r['rss_kb'] for r in minute) / 1024:.1f} MB, "
          f"last minute max {max(r['rss_kb'] for r in last) / 1024:.1f} MB, peak {max(r['rss_kb'] for r in rows) / 1024:.1f} MB")
    print(f"of which anonymous (heap, stacks) first window {rows[0]['rss_anon_kb'] / 1024:.1f} MB, last window "
          f"{rows[-1]['rss_anon_kb'] / 1024:.1f} MB; mapped files {rows[0]['rss_file_kb'] / 1024:.1f} -> "
          f"{rows[-1]['rss_file_kb'] / 1024:.1f} MB")
    print(f"open fds first window {rows[0]['fds']}, last window {rows[-1]['fds']}, "
          f"range {min(r['fds'] for r in rows)}-{max(r['fds'] for r in rows)}; sockets first/last "
          f"{rows[0]['fd_sockets']}/{rows[-1]['fd_sockets']}, files {rows[0]['fd_files']}/{rows[-1]['fd_files']}, "
          f"other {rows[0]['fd_other']}/{rows[-1]['fd_other']}")
    print(f"acknowledged: {len(acked_elements)} sequence writes (lost {len(acked_elements - found)}), "
          f"{len(acked_events)} notify events (undelivered {len(acked_events - events)}), "
          f"{len(acked_versions)} rotations (secrets.rotated undelivered {len(acked_versions - versions)})")
    print(f"wrote {out_csv} ({len(rows)} windows of {window:.0f} s)")
finally:
    fountain.stop()
