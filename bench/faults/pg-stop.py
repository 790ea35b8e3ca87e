"""PostgreSQL stopped under load and started again, fountain left running. See pg-stop.sh."""

import asyncio
import json
import os
import sys

from faultlib import (Fountain, Load, PrivatePostgres, WebhookSink, acknowledged, find_elements, log, pct,
                      setup_identities, statuses, wait_for_deliveries)

binary, work = sys.argv[1], sys.argv[2]
base_port = int(os.environ.get("BENCH_PORT", "18200"))
pg_port = int(os.environ.get("BENCH_PG_PORT", "55433"))
stop_at = float(os.environ.get("BENCH_STOP_AT", "10"))
down_seconds = float(os.environ.get("BENCH_DOWN_SECONDS", "30"))
after_seconds = float(os.environ.get("BENCH_AFTER_SECONDS", "20"))
rate = float(os.environ.get("BENCH_RATE", "40"))

# Words that would show a database's internals in an answer.
INTERNALS = ("sql", "postgres", "diesel", "r2d2", "connection refused", "server closed", "panick", "backtrace",
             "relation", "syntax", "tcp", "socket", "55433", "127.0.0.1")

pg = PrivatePostgres(pg_port)
fountain = Fountain(binary, work, base_port, pg.url)
try:
    fountain.create_admin("root")
    fountain.start_all()
    fountain.wait_ready(["gateway", "kms", "secrets", "notify", "twofa", "search", "sequence"])
    gw = fountain.gateway
    pid = fountain.pid("all")
    log(f"fountain serve (all roles, pid {pid}) on PostgreSQL 15 at 127.0.0.1:{pg_port}")
    sink = WebhookSink()
    traffic = setup_identities(gw, sink)
    mix = [traffic.sequence_write("sequence write", 1), traffic.publish("notify publish"),
           traffic.secrets_read("secrets read"), traffic.login("login"),
           traffic.read("twofa status", "/twofa/2fa/status", traffic.writer),
           traffic.read("kms keys", "/kms/keys", traffic.admin), traffic.search("search"),
           traffic.sequence_write("sequence write", 500_001)]
    marks = {}

    async def fault(load):
        await asyncio.sleep(stop_at)
        marks["stop"] = load.now()
        await asyncio.to_thread(pg.stop)
        marks["stopped"] = load.now()
        await asyncio.sleep(down_seconds)
        marks["start"] = load.now()
        await asyncio.to_thread(pg.start)
        marks["started"] = load.now()

    load = Load(gw, [(rate, mix)], timeout=60)
    records = asyncio.run(load.run(stop_at + down_seconds + after_seconds, fault))
    alive = fountain.procs["all"].poll() is None

    failed = [r for r in records if not r.ok]
    bad = []  # failures that are not a clean 503 JSON error
    for r in failed:
        try:
            body = json.loads(r.error or "")
            clean = r.status == 503 and isinstance(body.get("errorCode"), str) and set(body) == {"errorCode", "message", "details"}
            leaky = any(word in r.error.lower() for word in INTERNALS)
        except ValueError:
            clean, leaky = False, False
        if not clean or leaky:
            bad.append(r)
    kinds = sorted({r.kind for r in records})
    print()
    print(f"PostgreSQL stopped (pg_ctl stop -m fast) at {marks['stop']:.1f} s for {down_seconds:.0f} s under "
          f"{rate:.0f} req/s through the gateway; fountain (one process, all roles) kept running")
    print(f"requests: {len(records)}, failed: {len(failed)} ({statuses(failed) or '-'}), "
          f"not a clean 503 JSON error: {len(bad)}")
    for r in bad[:10]:
        print(f"  {r.kind}: {r.status} {r.error}")
    sample = next((r for r in failed if r.status == 503), None)
    if sample:
        print(f"a 503 answer as sent ({sample.kind}): {sample.error}")
    print(f"{'kind':16s} {'sent':>5s} {'failed':>6s} {'failed p50 wait':>15s} {'max wait':>8s} "
          f"{'PG start -> first 2xx':>21s} {'failures after PG back':>22s}")
    for kind in kinds:
        mine = [r for r in records if r.kind == kind]
        bad_kind = [r for r in mine if not r.ok]
        back = [r.sent + r.latency for r in mine if r.ok and r.sent >= marks["start"]]
        # First success among requests sent after the restart began, and failures after it.
        first = min(back, default=float("nan")) - marks["started"]
        after = [r for r in bad_kind if r.sent >= marks["started"]]
        waits = [r.latency for r in bad_kind]
        print(f"{kind:16s} {len(mine):5d} {len(bad_kind):6d} {pct(waits, 50) * 1000:13.0f}ms "
              f"{max(waits, default=0) * 1000:6.0f}ms {first:20.2f}s {len(after):22d}")
    last_failure = max((r.sent + r.latency for r in failed), default=marks["started"])
    print(f"PostgreSQL accepting connections again at {marks['started']:.1f} s; last failed answer at "
          f"{last_failure:.1f} s ({last_failure - marks['started']:+.2f} s after)")

    acked_elements = acknowledged(records, {"sequence write"})
    acked_events = acknowledged(records, {"notify publish"})
    found, took = find_elements(gw, traffic.writer, "action", acked_elements)
    events, _, _ = wait_for_deliveries(sink, acked_events, set())
    rows = int(pg.psql("SELECT count(*) FROM sequence_elements WHERE element_type = 'action'"))
    print(f"acknowledged sequence writes: {len(acked_elements)}, found by search: {len(found & acked_elements)}, "
          f"lost: {len(acked_elements - found)}; rows in the database: {rows}")
    print(f"acknowledged notify events: {len(acked_events)}, delivered: {len(events)}, lost: {len(acked_events - events)}")
    print(f"fountain restarted: {'no (same process, pid ' + str(pid) + ')' if alive else 'it EXITED'}; "
          f"load generator's largest lateness {load.behind * 1000:.0f} ms")
finally:
    fountain.stop()
    pg.destroy()
