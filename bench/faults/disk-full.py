"""The data directory's file system fills up under load, then space is freed; fountain is not
restarted. See disk-full.sh."""

import asyncio
import json
import os
import sqlite3
import sys

from faultlib import (Fountain, Load, Request, WebhookSink, acknowledged, find_elements, log, pct, setup_identities,
                      statuses, wait_for_deliveries)

binary, work, mount = sys.argv[1], sys.argv[2], sys.argv[3]
base_port = int(os.environ.get("BENCH_PORT", "18500"))
headroom_mb = float(os.environ.get("BENCH_HEADROOM_MB", "4"))
full_seconds = float(os.environ.get("BENCH_FULL_SECONDS", "15"))
after_seconds = float(os.environ.get("BENCH_AFTER_SECONDS", "15"))
rate = float(os.environ.get("BENCH_RATE", "40"))
INTERNALS = ("sql", "disk", "full", "database or", "diesel", "r2d2", "tantivy", "panick", "backtrace", "/tmp", "errno")

data = os.path.join(mount, "fountain")
ballast = os.path.join(mount, "ballast")


def free_bytes():
    stat = os.statvfs(mount)
    return stat.f_bavail * stat.f_frsize


fountain = Fountain(binary, work, base_port, extra_env={"FOUNTAIN_DATA__DIR": data})
fountain.data_dir = lambda role=None: data
try:
    fountain.create_admin("root")
    fountain.start_all()
    fountain.wait_ready(["gateway", "kms", "secrets", "notify", "twofa", "search", "sequence"])
    gw, pid = fountain.gateway, fountain.pid("all")
    sink = WebhookSink()
    traffic = setup_identities(gw, sink)
    # Ballast: everything but `headroom_mb` of the file system, removed later to free space.
    with open(ballast, "wb") as f:
        f.write(b"\0" * max(0, int(free_bytes() - headroom_mb * 2**20)))
    log(f"data directory on a {os.statvfs(mount).f_blocks * os.statvfs(mount).f_frsize / 2**20:.0f} MB tmpfs, "
        f"{free_bytes() / 2**20:.1f} MB free after the ballast; fountain pid {pid}")

    big = "x" * 60_000  # a 60 kB payload: notify accepts up to 64 KiB of JSON

    def big_event(kind):
        return Request(kind, lambda n: ("POST", "/notify/events", {"topic": "bench.load", "payload": {"n": n, "pad": big}},
                                        traffic.admin), ack=lambda answer, n: answer["id"])

    def long_write(kind, first_id):
        request = traffic.sequence_write(kind, first_id)
        make = request.make
        request.make = lambda n: (lambda m: (m[0], m[1], {**m[2], "comment": m[2]["comment"] + " " + "y" * 900}, m[3]))(make(n))
        return request

    mix = [big_event("notify publish"), long_write("sequence write", 1),
           traffic.read("twofa status", "/twofa/2fa/status", traffic.writer), traffic.search("search")]
    marks = {}

    async def fault(load):
        while free_bytes() > 256 * 1024 and not any(r.status >= 500 for r in load.records):
            await asyncio.sleep(0.05)
        marks["full"] = load.now()
        log(f"full at {marks['full']:.1f} s ({free_bytes() // 1024} kB free)")
        await asyncio.sleep(full_seconds)
        marks["freed"] = load.now()
        os.remove(ballast)
        log(f"ballast removed at {marks['freed']:.1f} s ({free_bytes() / 2**20:.1f} MB free)")

    # Long enough to fill the headroom, stay full, and run on after the space comes back.
    load = Load(gw, [(rate, mix)], timeout=30)
    total = float(os.environ.get("BENCH_SECONDS", str(30 + full_seconds + after_seconds)))
    records = asyncio.run(load.run(total, fault))
    alive = fountain.procs["all"].poll() is None
    if "freed" not in marks:
        raise SystemExit(f"the file system did not fill within {total:.0f} s")

    while_full = [r for r in records if marks["full"] <= r.sent < marks["freed"]]
    failed = [r for r in records if not r.ok]
    unclean = []
    for r in failed:
        try:
            body = json.loads(r.error or "")
            clean = r.status >= 500 and set(body) == {"errorCode", "message", "details"}
        except ValueError:
            clean = False
        if not clean or any(word in (r.error or "").lower() for word in INTERNALS):
            unclean.append(r)
    print()
    print(f"data directory on a tmpfs: {headroom_mb:.0f} MB left after a ballast file, filled by {rate:.0f} req/s "
          f"through the gateway (60 kB notify events, 1 kB sequence writes, reads); full for {full_seconds:.0f} s, "
          f"then the ballast removed; fountain not restarted")
    print(f"requests: {len(records)}; failed: {len(failed)} ({statuses(failed) or '-'}); "
          f"not a clean 5xx JSON error or showing internals: {len(unclean)}")
    for r in unclean[:5]:
        print(f"  {r.kind}: {r.status} {r.error}")
    sample = next((r for r in failed if r.status >= 500), None)
    if sample:
        print(f"an answer while full, as sent ({sample.kind}, {sample.status}): {sample.error}")
    print(f"{'kind':16s} {'while full':>10s} {'failed':>6s} {'statuses':20s} {'freed -> first 2xx':>18s} {'failed after freed+2s':>21s}")
    for kind in sorted({r.kind for r in records}):
        mine = [r for r in while_full if r.kind == kind]
        bad = [r for r in mine if not r.ok]
        back = [r.sent + r.latency for r in records if r.kind == kind and r.ok and r.sent >= marks["freed"]]
        late = [r for r in records if r.kind == kind and not r.ok and r.sent >= marks["freed"] + 2]
        print(f"{kind:16s} {len(mine):10d} {len(bad):6d} {statuses(bad) or '-':20s} "
              f"{min(back, default=float('nan')) - marks['freed']:17.2f}s {len(late):21d}")
    fail_lat = [r.latency * 1000 for r in failed]
    print(f"a failing request's answer took p50 {pct(fail_lat, 50):.0f} ms, max {max(fail_lat, default=0):.0f} ms")

    acked_elements = acknowledged(records, {"sequence write"})
    acked_events = acknowledged(records, {"notify publish"})
    found, took = find_elements(gw, traffic.writer, "action", acked_elements)
    events, _, waited = wait_for_deliveries(sink, acked_events, set())
    print(f"acknowledged sequence writes: {len(acked_elements)}, found by search: {len(found & acked_elements)}, "
          f"lost: {len(acked_elements - found)}")
    print(f"acknowledged notify events: {len(acked_events)}, delivered: {len(events)}, lost: {len(acked_events - events)}")
    fountain.stop()
    panics = sum("panicked" in line for line in open(fountain.logs["all"], errors="replace"))
    db = sqlite3.connect(os.path.join(data, "fountain.db"))
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    rows = db.execute("SELECT count(*) FROM sequence_elements").fetchone()[0]
    events_stored = {i for (i,) in db.execute("SELECT id FROM events WHERE topic = 'bench.load'")}
    print(f"after a clean stop: PRAGMA integrity_check = {integrity}; sequence rows {rows}; acknowledged events "
          f"missing from the events table: {len(acked_events - events_stored)}")
    for event in sorted(acked_events - events)[:5]:
        rows = db.execute("SELECT status, attempts, next_attempt_at, last_error FROM deliveries WHERE event_id = ?",
                          (event,)).fetchall()
        print(f"  undelivered event {event} (waited {waited:.0f} s): deliveries {rows or 'none'}")
    db.close()
    print(f"fountain restarted: {'no (one process throughout)' if alive else 'it EXITED'}; panics in its log: {panics}; "
          f"load generator's largest lateness {load.behind * 1000:.0f} ms")
finally:
    fountain.stop()
