"""The search role down while Service A takes writes, then back. See search-down.sh."""

import asyncio
import os
import sys
import time

from faultlib import (ROLES, Fountain, Load, PrivatePostgres, acknowledged, async_wait_ready, call, find_elements, log,
                      pct, setup_identities, statuses)

binary, work = sys.argv[1], sys.argv[2]
base_port = int(os.environ.get("BENCH_PORT", "18700"))
pg_port = int(os.environ.get("BENCH_PG_PORT", "55434"))
seconds = float(os.environ.get("BENCH_SECONDS", "60"))
rate = float(os.environ.get("BENCH_RATE", "50"))

pg = PrivatePostgres(pg_port)
fountain = Fountain(binary, work, base_port, pg.url)
try:
    fountain.provision_per_role()
    fountain.create_admin("root", init=False)
    for role in ROLES:
        fountain.start_role(role)
        fountain.wait_ready([role])
    gw = fountain.gateway
    traffic = setup_identities(gw)
    sequence = fountain.url("sequence")

    def sync_status():
        return call("GET", sequence + "/sync/status", token=traffic.writer)[1]

    log(f"7 role processes on 127.0.0.1:{base_port}-{base_port + 6} over PostgreSQL 15 at :{pg_port}; "
        f"stopping search (SIGTERM) for the whole write phase")
    fountain.procs["search"].terminate()
    fountain.procs["search"].wait()
    depths = []

    async def watch(load):
        while load.now() < seconds:
            status = await asyncio.to_thread(sync_status)
            depths.append((load.now(), status.get("outboxDepth", -1)))
            await asyncio.sleep(1)

    load = Load(gw, [(rate, [traffic.sequence_write("sequence write", 1)])], timeout=30)
    records = asyncio.run(load.run(seconds, watch))
    before = sync_status()
    acked = acknowledged(records, {"sequence write"})
    failed = [r for r in records if not r.ok]
    lat = [r.latency * 1000 for r in records]

    restart = time.monotonic()
    fountain.start_role("search")
    ready = asyncio.run(async_wait_ready(fountain.url("search") + "/ready"))
    found, took = find_elements(gw, traffic.writer, "action", acked, limit=300)
    drained_at = None
    while time.monotonic() - restart < 300:
        status = sync_status()
        if status["outboxDepth"] == 0:
            drained_at = time.monotonic() - restart
            break
        time.sleep(0.1)

    print()
    print(f"search role stopped; {rate:.0f} sequence writes/s through the gateway for {seconds:.0f} s; "
          f"then search started again")
    print(f"writes: {len(records)} sent, {len(records) - len(failed)} acknowledged (201), failed {len(failed)} "
          f"({statuses(failed) or '-'}); write p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms")
    print(f"outbox while search was down: depth up to {max(d for _, d in depths)}; when search started: depth "
          f"{before['outboxDepth']}, oldest {before['oldestPendingAgeSeconds']:.1f} s, failed {before['failedCount']}")
    print(f"search start -> ready {ready:.2f} s; start -> every acknowledged element found by search "
          f"{ready + took:.2f} s; -> outbox empty {drained_at if drained_at is not None else float('nan'):.2f} s")
    print(f"acknowledged writes: {len(acked)}, found by search: {len(found & acked)}, lost: {len(acked - found)}")
    print(f"load generator's largest lateness {load.behind * 1000:.0f} ms")
finally:
    fountain.stop()
    pg.destroy()
