"""kill -9 of each role in turn, under load, with every role in its own process over one private
PostgreSQL. See kill9.sh for the figures it prints."""

import asyncio
import os
import sys

from faultlib import (ROLES, Fountain, Load, PrivatePostgres, WebhookSink, acknowledged, async_wait_ready,
                      find_elements, log, setup_identities, statuses, wait_for_deliveries)

binary, work = sys.argv[1], sys.argv[2]
base_port = int(os.environ.get("BENCH_PORT", "18100"))
pg_port = int(os.environ.get("BENCH_PG_PORT", "55432"))
phase_seconds = float(os.environ.get("BENCH_SECONDS", "20"))
kill_at = float(os.environ.get("BENCH_KILL_AT", "5"))
down_seconds = float(os.environ.get("BENCH_DOWN_SECONDS", "1"))
rate = float(os.environ.get("BENCH_RATE", "40"))
background_rate = float(os.environ.get("BENCH_BACKGROUND_RATE", "10"))

pg = PrivatePostgres(pg_port)
fountain = Fountain(binary, work, base_port, pg.url)
try:
    fountain.provision_per_role()
    fountain.create_admin("root", init=False)
    for role in ROLES:
        fountain.start_role(role)
        fountain.wait_ready([role])
    gw = fountain.gateway
    log(f"7 role processes ready on 127.0.0.1:{base_port}-{base_port + 6}, PostgreSQL 15 on 127.0.0.1:{pg_port}")

    sink = WebhookSink()
    traffic = setup_identities(gw, sink)

    def role_mix(role, phase):
        """Requests that need `role` to answer, all through the gateway."""
        first_id = 1_000_000 * (phase + 1)
        return {
            "gateway": [traffic.secrets_read("secrets read"), traffic.search("search"),
                        traffic.read("twofa status", "/twofa/2fa/status", traffic.writer),
                        traffic.sequence_write("sequence write", first_id)],
            "kms": [traffic.login("login"), traffic.read("kms keys", "/kms/keys", traffic.admin)],
            "secrets": [traffic.secrets_read("secrets read")] * 4 + [traffic.rotate("rotation")],
            "notify": [traffic.publish("notify publish")],
            "search": [traffic.search("search")],
            "sequence": [traffic.sequence_write("sequence write", first_id)],
            "twofa": [traffic.read("twofa status", "/twofa/2fa/status", traffic.writer)],
        }[role]

    results, all_records = [], []
    for phase, role in enumerate(ROLES):
        own = role_mix(role, phase)
        background = [traffic.sequence_write("bg sequence write", 1_000_000 * (phase + 1) + 500_000),
                      traffic.publish("bg notify publish")]
        marks = {}

        async def fault(load, role=role, marks=marks):
            await asyncio.sleep(kill_at)
            marks["kill"] = load.now()
            fountain.kill9(role)
            await asyncio.sleep(down_seconds)
            marks["restart"] = load.now()
            fountain.start_role(role)
            marks["ready"] = marks["restart"] + await async_wait_ready(fountain.url(role) + "/ready")

        load = Load(gw, [(rate, own), (background_rate, background)])
        records = asyncio.run(load.run(phase_seconds, fault))
        all_records += records
        own_kinds = {r.kind for r in own}
        mine = [r for r in records if r.kind in own_kinds]
        after = [r for r in mine if r.sent >= marks["restart"] and r.ok]
        first_ok = min((r.sent + r.latency for r in after), default=float("nan")) - marks["restart"]
        failed = [r for r in mine if not r.ok]
        failed_outside = [r for r in failed if not (marks["kill"] - 1 <= r.sent <= marks["restart"] + first_ok)]
        collateral = [r for r in records if r.kind not in own_kinds and not r.ok]
        results.append((role, len(mine), failed, failed_outside, collateral, marks, first_ok, load.behind))
        log(f"{role:8s}: {len(mine)} requests of its own, {len(failed)} failed ({statuses(failed) or '-'}); "
            f"restart -> ready {marks['ready'] - marks['restart']:.2f} s, -> first success {first_ok:.2f} s; "
            f"other requests failed: {len(collateral)} ({statuses(collateral) or '-'})")
        for r in failed + collateral:
            if r.status >= 500 and r.status not in (502, 503, 504):
                log(f"  unexpected {r.status} for {r.kind}: {r.error}")

    # Nothing acknowledged may be lost: every element answered 2xx is found by search, every
    # event answered 202 and every rotation answered 200 reaches the webhook.
    acked_elements = acknowledged(all_records, {"sequence write", "bg sequence write"})
    acked_events = acknowledged(all_records, {"notify publish", "bg notify publish"})
    acked_versions = acknowledged(all_records, {"rotation"})
    found, took = find_elements(gw, traffic.writer, "action", acked_elements)
    events, versions, _ = wait_for_deliveries(sink, acked_events, acked_versions)

    print()
    print(f"kill -9 per role: {phase_seconds:.0f} s of load per role ({rate:.0f} req/s that need the role, "
          f"{background_rate:.0f} req/s of writes beside), kill at {kill_at:.0f} s, restarted {down_seconds:.0f} s later")
    print(f"{'role':9s} {'own req':>7s} {'failed':>6s} {'statuses':24s} {'outside outage':>14s} {'others failed':>13s} "
          f"{'restart->ready':>14s} {'restart->1st 2xx':>16s}")
    for role, count, failed, outside, collateral, marks, first_ok, behind in results:
        print(f"{role:9s} {count:7d} {len(failed):6d} {statuses(failed) or '-':24s} {len(outside):14d} "
              f"{len(collateral):13d} {marks['ready'] - marks['restart']:13.2f}s {first_ok:15.2f}s")
    unexpected = [r for r in all_records if r.status >= 500 and r.status not in (502, 503, 504)]
    print(f"answers 500 (or any 5xx other than 502/503/504): {len(unexpected)}")
    print(f"acknowledged sequence writes: {len(acked_elements)}, found by search: {len(found & acked_elements)}, "
          f"lost: {len(acked_elements - found)} (search found them all after {took:.1f} s)")
    print(f"acknowledged notify events: {len(acked_events)}, delivered: {len(events)}, "
          f"lost: {len(acked_events - events)}")
    print(f"acknowledged rotations: {len(acked_versions)}, secrets.rotated delivered: {len(acked_versions & versions)}, "
          f"lost: {len(acked_versions - versions)}")
    print(f"load generator: largest lateness against its schedule {max(r[7] for r in results) * 1000:.0f} ms")
finally:
    fountain.stop()
    pg.destroy()
