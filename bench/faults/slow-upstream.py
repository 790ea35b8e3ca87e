"""A slow upstream behind the gateway beside a fast one. See slow-upstream.sh."""

import asyncio
import json
import os
import subprocess
import sys
import time

from faultlib import (Fountain, Load, Request, call, log, login, open_fds, pct, register, rss_kb, statuses,
                      wait_until)

binary, work = sys.argv[1], sys.argv[2]
base_port = int(os.environ.get("BENCH_PORT", "18600"))
seconds = float(os.environ.get("BENCH_SECONDS", "20"))
fast_rate = float(os.environ.get("BENCH_FAST_RATE", "150"))
slow_rate = float(os.environ.get("BENCH_SLOW_RATE", "50"))
slow_seconds = float(os.environ.get("BENCH_SLOW_SECONDS", "5"))
short_timeout = os.environ.get("BENCH_SHORT_TIMEOUT", "2")
slow_port, fast_port = base_port + 10, base_port + 11

upstreams = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "upstream.py"),
                              str(slow_port), str(fast_port), str(slow_seconds)], stdout=subprocess.PIPE, text=True)
upstreams.stdout.readline()


def gateway_connections(port):
    """Established TCP connections from the gateway to an upstream port."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "dst", f"127.0.0.1:{port}"],
                         stdout=subprocess.PIPE, text=True).stdout
    return len(out.splitlines())


def start(timeout_seconds):
    fountain = Fountain(binary, os.path.join(work, f"timeout-{timeout_seconds}"), base_port, extra_env={
        "FOUNTAIN_PEERS__SLOW": f"http://127.0.0.1:{slow_port}", "FOUNTAIN_ROLES__GATEWAY__ROUTES__SLOW": "slow",
        "FOUNTAIN_PEERS__FAST": f"http://127.0.0.1:{fast_port}", "FOUNTAIN_ROLES__GATEWAY__ROUTES__FAST": "fast",
        "FOUNTAIN_ROLES__GATEWAY__UPSTREAM_TIMEOUT_SECONDS": str(timeout_seconds),
    })
    os.makedirs(fountain.work, exist_ok=True)
    fountain.create_admin("root")
    fountain.start_all("gateway,kms")
    fountain.wait_ready(["gateway", "kms"])
    gw = fountain.gateway
    admin = login(gw, "root")
    for user in ("fast_client", "slow_client"):
        register(gw, admin, user)
    wait_until("the upstreams through the gateway", lambda: call("GET", gw + "/fast/", token=admin)[0] == 200, 30)
    return fountain, login(gw, "fast_client"), login(gw, "slow_client")


def run(fountain, fast_token, slow_token, with_slow):
    pid = fountain.pid("all")
    samples = []

    async def sample(load):
        while load.now() < seconds:
            samples.append((rss_kb(pid), open_fds(pid), gateway_connections(slow_port)))
            await asyncio.sleep(1)

    mixes = [(fast_rate, [Request("fast", lambda n: ("GET", "/fast/item", None, fast_token))])]
    if with_slow:
        mixes.append((slow_rate, [Request("slow", lambda n: ("GET", "/slow/item", None, slow_token))]))
    load = Load(fountain.gateway, mixes, timeout=60)
    records = asyncio.run(load.run(seconds, sample))
    return records, samples, load.behind


def describe(records, kind):
    mine = [r for r in records if r.kind == kind]
    lat = [r.latency * 1000 for r in mine]
    return mine, f"{len(mine)} sent, {statuses(mine)}, p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms"


results = []
try:
    fountain, fast_token, slow_token = start(30)
    log(f"gateway+kms (one process) at {fountain.gateway}; upstreams: slow ({slow_seconds:.0f} s) :{slow_port}, fast :{fast_port}")
    alone = run(fountain, fast_token, slow_token, with_slow=False)
    beside = run(fountain, fast_token, slow_token, with_slow=True)
    # Idle past the clients' keep-alive (3 s here, 5 s on fountain's side), then past the
    # gateway's pooled upstream connections' idle time (30 s, swept every 15 s): what is still
    # held after that is held for good.
    time.sleep(10)
    after = rss_kb(fountain.pid("all")), open_fds(fountain.pid("all")), gateway_connections(slow_port)
    time.sleep(40)
    later = rss_kb(fountain.pid("all")), open_fds(fountain.pid("all")), gateway_connections(slow_port)
    fountain.stop()
    fountain, fast_token, slow_token = start(short_timeout)
    short = run(fountain, fast_token, slow_token, with_slow=True)
    fountain.stop()

    print()
    print(f"slow upstream ({slow_seconds:.0f} s per answer) and fast upstream behind the gateway; {seconds:.0f} s per run, "
          f"fast {fast_rate:.0f} req/s (one client), slow {slow_rate:.0f} req/s (another client)")
    for name, (records, samples, behind) in (("fast alone (peer)", alone),
                                             ("fast beside slow, upstream_timeout_seconds=30", beside),
                                             (f"fast beside slow, upstream_timeout_seconds={short_timeout}", short)):
        _, fast_text = describe(records, "fast")
        print(f"{name}:")
        print(f"  fast: {fast_text}")
        if any(r.kind == "slow" for r in records):
            slow_records, slow_text = describe(records, "slow")
            print(f"  slow: {slow_text}")
            bodies = {r.error for r in slow_records if not r.ok}
            for body in sorted(bodies)[:3]:
                print(f"  slow answer as sent: {body}")
            malformed = [r for r in slow_records if not r.ok and
                         set(json.loads(r.error or "{}")) != {"errorCode", "message", "details"}]
            print(f"  slow failures that are not a JSON error: {len(malformed)}")
        print(f"  gateway process: RSS {min(s[0] for s in samples) / 1024:.1f}-{max(s[0] for s in samples) / 1024:.1f} MB, "
              f"open fds {min(s[1] for s in samples)}-{max(s[1] for s in samples)}, connections to the slow upstream "
              f"up to {max(s[2] for s in samples)}; generator lateness {behind * 1000:.0f} ms")
    for wait, (rss, fds, connections) in ((10, after), (50, later)):
        print(f"{wait} s after the 30 s-timeout runs: gateway RSS {rss / 1024:.1f} MB, open fds {fds}, "
              f"connections to the slow upstream {connections}")
finally:
    upstreams.terminate()
