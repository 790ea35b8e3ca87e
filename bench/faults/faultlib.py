"""What the fault scripts share: fountain as real processes (all roles in one, or one process per
role over one database), a private PostgreSQL cluster, an admin with a second factor, a webhook
sink, and a steady-rate load through the gateway that records every request.

Loopback only. Nothing here prints a password, key or token.
"""

import asyncio
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import aiohttp
import pyotp

# Start order for one process per role: kms and secrets first (every other role's start-up asks
# them), the gateway last.
ROLES = ["kms", "secrets", "notify", "twofa", "search", "sequence", "gateway"]
PORT_OFFSET = {"gateway": 0, "search": 1, "sequence": 2, "kms": 3, "twofa": 4, "secrets": 5, "notify": 6}
PASSWORD = "bench password 1234"
PG_BIN = "/usr/lib/postgresql/15/bin"


def log(message):
    print(time.strftime("%H:%M:%S ") + message, flush=True)


# ---- blocking HTTP for set-up and checks ----

def call(method, url, body=None, token=None, timeout=15, headers=None):
    """One JSON call; (status, parsed answer or text). Connection failures give status 0."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)
    try:
        return status, json.loads(text or b"null")
    except ValueError:
        return status, text.decode(errors="replace")


def must(result, what):
    status, answer = result
    if not 200 <= status < 300:
        raise SystemExit(f"{what}: {status} {str(answer)[:300]}")
    return answer


def wait_until(what, check, limit=90.0, every=0.05):
    """Polls `check` until it returns something truthy; the time it took."""
    start = time.monotonic()
    while True:
        value = check()
        if value:
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            raise SystemExit(f"timed out after {limit:.0f} s waiting for {what}")
        time.sleep(every)


# ---- a private PostgreSQL cluster (never the machine's shared one) ----

class PrivatePostgres:
    """`initdb` + `pg_ctl` as the postgres user in a temporary directory, on its own port and
    socket directory; removed by `destroy`."""

    def __init__(self, port):
        self.port = port
        self.root = tempfile.mkdtemp(prefix="fountain-faults-pg-")
        shutil.chown(self.root, "postgres", "postgres")
        self.data = os.path.join(self.root, "pg")
        self.url = f"postgres://postgres@127.0.0.1:{port}/fountain"
        self._as_postgres(["initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"])
        self.start()
        self._as_postgres(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "fountain"])

    def _as_postgres(self, argv, check=True):
        argv = ["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, argv[0])] + argv[1:]
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[4:])}: {done.stdout[-500:]}")
        return done

    def start(self):
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_postgres(["pg_ctl", "-D", self.data, "-o", options, "-l",
                           os.path.join(self.root, "log"), "-w", "start"])

    def stop(self):
        """`pg_ctl stop -m fast`: sessions are ended, as on a failover or an operator's restart."""
        self._as_postgres(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])

    def psql(self, sql):
        done = self._as_postgres(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                  "-d", "fountain", "-At", "-c", sql])
        return done.stdout.strip()

    def destroy(self):
        self._as_postgres(["pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


# ---- fountain ----

class Fountain:
    """fountain's processes for one run: `all` (every role in one process) or one process per
    role, each with its own data directory and only its own credential, sharing one database."""

    def __init__(self, binary, work, base_port, database_url=None, extra_env=None):
        self.binary, self.work, self.base_port = binary, work, base_port
        self.database_url = database_url
        self.extra_env = dict(extra_env or {})
        self.procs = {}  # role (or "all") -> Popen
        self.logs = {}
        self.per_role = False

    def port(self, role):
        return self.base_port + PORT_OFFSET[role]

    def url(self, role):
        return f"http://127.0.0.1:{self.port(role)}"

    @property
    def gateway(self):
        return self.url("gateway")

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNTAIN_") and k != "DATABASE_URL"}
        env.update({
            "FOUNTAIN_LOG__LEVEL": "warn,actix_server=error",
            "FOUNTAIN_LOG__FORMAT": "json",
            "FOUNTAIN_ROLES__KMS__BCRYPT_COST": "4",
            "FOUNTAIN_ROLES__NOTIFY__POLL_INTERVAL_MS": "100",
            "FOUNTAIN_ROLES__SEQUENCE__POLL_INTERVAL_MS": "100",
        })
        for role in ROLES:
            env[f"FOUNTAIN_ROLES__{role.upper()}__PORT"] = str(self.port(role))
            env[f"FOUNTAIN_PEERS__{role.upper()}"] = self.url(role)
        if self.database_url:
            env["FOUNTAIN_DATABASE__URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def data_dir(self, role=None):
        return os.path.join(self.work, "roles", role, "data") if role else os.path.join(self.work, "data")

    def admin(self, *args, data_dir=None):
        """`fountain admin …` against the provisioning data directory, as an operator runs it."""
        argv = [self.binary, "--data-dir", data_dir or self.data_dir(), "admin", *args]
        done = subprocess.run(argv, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise SystemExit(f"fountain admin {args[0]}: exit {done.returncode}: {done.stdout[-800:]}")
        return done.stdout

    def create_admin(self, username, init=True):
        password_file = os.path.join(self.work, "admin-password")
        with open(password_file, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(password_file, 0o600)
        self.admin("create-user", *(["--init"] if init else []), "--username", username,
                   "--role", "admin", "--password-file", password_file)

    def _spawn(self, key, argv, env):
        log_path = os.path.join(self.work, f"{key}.log")
        self.logs[key] = log_path
        out = open(log_path, "ab")
        self.procs[key] = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        out.close()
        return self.procs[key]

    # all-in-one
    def start_all(self, roles="all"):
        return self._spawn("all", [self.binary, "--data-dir", self.data_dir(), "serve", "--role", roles], self.env())

    # one process per role
    def provision_per_role(self):
        """`fountain admin issue-credential --all --init`, then each role's credential in its own
        directory (as a container's secret), the master key shared as a credential file."""
        self.per_role = True
        issued = os.path.join(self.work, "issued")
        self.admin("issue-credential", "--all", "--init", "--out-dir", issued)
        for role in ROLES:
            creds = os.path.join(self.work, "roles", role, "credentials")
            os.makedirs(creds, mode=0o700, exist_ok=True)
            shutil.copy(os.path.join(issued, f"{role}.key"), os.path.join(creds, f"{role}.key"))

    def start_role(self, role):
        env = self.env()
        env["FOUNTAIN_SECURITY__MASTER_KEY_FILE"] = os.path.join(self.data_dir(), "master.key")
        env["FOUNTAIN_SECURITY__CREDENTIALS_DIR"] = os.path.join(self.work, "roles", role, "credentials")
        argv = [self.binary, "--data-dir", self.data_dir(role), "serve", "--role", role]
        return self._spawn(role, argv, env)

    def pid(self, key):
        return self.procs[key].pid

    def kill9(self, key):
        proc = self.procs[key]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def ready(self, role):
        return call("GET", self.url(role) + "/ready", timeout=2)[0] == 200

    def wait_ready(self, roles, limit=120):
        for role in roles:
            key = role if self.per_role else "all"
            def check(role=role, key=key):
                if self.procs[key].poll() is not None:
                    raise SystemExit(f"fountain ({key}) exited: {tail(self.logs[key])}")
                return self.ready(role)
            wait_until(f"{role} to be ready", check, limit)

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tail(path, lines=8):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def rss_kb(pid, field="VmRSS"):
    """A memory figure of /proc/<pid>/status in kB: VmRSS (all resident), RssAnon (heap and
    stacks: what a leak grows) or RssFile (mapped files, such as the search index)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fds_by_kind(pid):
    """Open descriptors of a process as (sockets, files, others): what is held open, not just how many."""
    sockets = files = others = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            sockets += 1
        elif target.startswith("/"):
            files += 1
        else:
            others += 1
    return sockets, files, others


# ---- identities ----

def login(gateway, username):
    answer = must(call("POST", gateway + "/kms/login", {"username": username, "password": PASSWORD}), "login")
    return answer["access_token"]


def step_up(gateway, token):
    """Enrols a second factor for the token's user and steps up: a token with `mfa`. Activation
    uses the current TOTP step and the step-up the next one (twofa accepts one step of skew,
    and each code once), so nobody waits for a new code."""
    enrolment = must(call("POST", gateway + "/twofa/2fa/enroll", token=token), "enroll")
    totp = pyotp.TOTP(enrolment["secret"])
    now = time.time()
    if 30 - now % 30 < 3:  # too close to a step edge: the two codes might name one step
        time.sleep(30 - now % 30 + 0.5)
        now = time.time()
    must(call("POST", gateway + "/twofa/2fa/activate", {"code": totp.at(now)}, token), "activate")
    stepped = must(call("POST", gateway + "/twofa/2fa/verify", {"code": totp.at(now + 30)}, token), "step-up")
    return stepped["access_token"]


def register(gateway, admin_token, username):
    must(call("POST", gateway + "/kms/register", {"username": username, "password": PASSWORD}, admin_token),
         "register " + username)


# ---- a webhook sink ----

class WebhookSink:
    """A local HTTP server that records every webhook notify sends it (first arrival per event)."""

    def __init__(self):
        self.events = {}  # event id -> (topic, payload, arrival time.monotonic())
        self.lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with sink.lock:
                    sink.events.setdefault(body["id"], (body["topic"], body.get("payload"), time.monotonic()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 1024
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def subscribe(self, gateway, token, topics):
        must(call("POST", gateway + "/notify/subscriptions", {"topics": topics, "callbackUrl": self.url}, token),
             "subscribe")

    def received(self, topic=None):
        with self.lock:
            return {i: e for i, e in self.events.items() if topic is None or e[0] == topic}


# ---- a steady-rate load ----

class Request:
    """One kind of request in a load mix. `make(n)` returns (method, path, body, token); `ack`
    turns a 2xx answer into what must not be lost (an element id, an event id, a version), or
    None when the kind is a read."""

    def __init__(self, kind, make, ack=None):
        self.kind, self.make, self.ack = kind, make, ack


class Record:
    __slots__ = ("sent", "kind", "status", "latency", "ack", "error")

    def __init__(self, sent, kind, status, latency, ack, error):
        self.sent, self.kind, self.status, self.latency, self.ack, self.error = sent, kind, status, latency, ack, error

    @property
    def ok(self):
        return 200 <= self.status < 300


class Load:
    """Sends a mix of requests at a fixed schedule (request n at start + n / rate, whatever the
    answers do), each on a shared keep-alive pool without a cap on requests in flight, so a slow
    or failing service never slows the schedule. Records every request."""

    def __init__(self, base, mixes, timeout=15.0):
        self.base = base
        self.mixes = mixes  # list of (rate per second, [Request, ...]) run side by side
        self.timeout = timeout
        self.records = []
        self.t0 = None
        self.behind = 0.0  # largest lateness of a send against its schedule, seconds

    def now(self):
        return time.monotonic() - self.t0

    async def _one(self, session, request, n):
        method, path, body, token = request.make(n)
        headers = {"authorization": "Bearer " + token} if token else {}
        sent = self.now()
        status, error, ack = 0, None, None
        try:
            async with session.request(method, self.base + path, json=body, headers=headers) as answer:
                status = answer.status
                text = await answer.read()
                if 200 <= status < 300:
                    if request.ack:
                        ack = request.ack(json.loads(text), n)
                else:
                    error = text[:300].decode(errors="replace")
        except asyncio.TimeoutError:
            error = "client timeout"
        except aiohttp.ClientError as e:
            error = type(e).__name__
        self.records.append(Record(sent, request.kind, status, self.now() - sent, ack, error))

    async def _schedule(self, session, rate, requests, seconds, tasks):
        n = 0
        while True:
            due = n / rate
            if due >= seconds:
                return
            delay = due - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.behind = max(self.behind, -delay)
            request = requests[n % len(requests)]
            tasks.add(asyncio.ensure_future(self._one(session, request, n)))
            n += 1

    async def run(self, seconds, during=None):
        """Runs the load for `seconds`; `during(load)` is a coroutine run beside it (the fault)."""
        # Idle connections are dropped after 3 s, before fountain closes them (actix's idle
        # keep-alive is 5 s): reusing a connection the server is closing fails the request
        # (`ServerDisconnectedError`), a race of the client's, not of the server under test.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=3)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self.t0 = time.monotonic()
            tasks = set()
            schedules = [self._schedule(session, rate, reqs, seconds, tasks) for rate, reqs in self.mixes]
            fault = [during(self)] if during else []
            await asyncio.gather(*schedules, *fault)
            if tasks:
                await asyncio.gather(*tasks)
        return self.records


class Traffic:
    """The request kinds the scripts mix, all through the gateway, with the identities they need:
    a plain user (`writer`), an admin and the admin's stepped-up (`mfa`) token."""

    def __init__(self, writer, admin, mfa):
        self.writer, self.admin, self.mfa = writer, admin, mfa

    def sequence_write(self, kind, first_id):
        """`POST /service_a/sequence` of a new `action` element (ids from `first_id`); the
        acknowledgement is the element id, which search must find later."""
        def make(n):
            element = first_id + n
            return "POST", "/service_a/sequence", {"elementType": "action", "elementId": element,
                                                   "comment": f"INT. WAREHOUSE - NIGHT. Take {element}."}, self.writer
        return Request(kind, make, ack=lambda answer, n: first_id + n)

    def publish(self, kind, topic="bench.load"):
        """`POST /notify/events`; the acknowledgement is the event id, which the webhook must get."""
        return Request(kind, lambda n: ("POST", "/notify/events", {"topic": topic, "payload": {"n": n}}, self.admin),
                       ack=lambda answer, n: answer["id"])

    def read(self, kind, path, token):
        return Request(kind, lambda n: ("GET", path, None, token))

    def secrets_read(self, kind, service="bench_svc"):
        return self.read(kind, f"/secrets/secrets/{service}", self.mfa)

    def search(self, kind):
        return Request(kind, lambda n: ("POST", "/search", {"q": "warehouse", "query_by": "comment"}, self.writer))

    def login(self, kind, username="writer"):
        return Request(kind, lambda n: ("POST", "/kms/login", {"username": username, "password": PASSWORD}, None))

    def rotate(self, kind, service="bench_svc"):
        """A secret rotation; the acknowledgement is the new version, whose `secrets.rotated`
        event the webhook must get."""
        return Request(kind, lambda n: ("POST", f"/secrets/secrets/{service}/rotate", {}, self.mfa),
                       ack=lambda answer, n: answer["version"])


def setup_identities(gateway, sink=None):
    """An admin `root` (already created by the CLI) stepped up, a plain user `writer`, secrets for
    `bench_svc`, and the webhook sink subscribed to `bench.load` and `secrets.rotated`."""
    admin = login(gateway, "root")
    mfa = step_up(gateway, admin)
    register(gateway, admin, "writer")
    writer = login(gateway, "writer")
    if sink:
        sink.subscribe(gateway, admin, ["bench.load", "secrets.rotated"])
    must(call("POST", gateway + "/secrets/secrets/bench_svc", None, mfa), "create bench_svc secrets")
    return Traffic(writer, admin, mfa)


def wait_for_deliveries(sink, events, versions, limit=120.0):
    """Waits until the sink has every event id in `events` and a `secrets.rotated` of bench_svc
    for every version in `versions`; returns (events delivered, versions delivered, seconds)."""
    start = time.monotonic()
    while True:
        got_events = set(sink.received("bench.load"))
        got_versions = {p.get("version") for (_, p, _) in sink.received("secrets.rotated").values()
                        if p.get("serviceName") == "bench_svc"}
        if (events <= got_events and versions <= got_versions) or time.monotonic() - start > limit:
            return got_events & events, got_versions & versions, time.monotonic() - start
        time.sleep(0.1)


def acknowledged(records, kinds):
    return {r.ack for r in records if r.ok and r.ack is not None and r.kind in kinds}


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def statuses(records):
    counts = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return ", ".join(f"{k}×{v}" for k, v in sorted(counts.items()))


async def async_wait_ready(url, limit=120.0, every=0.02):
    """Seconds until `url` answers 200 (async, so the load keeps its schedule meanwhile)."""
    start = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() - start < limit:
            try:
                async with session.get(url) as answer:
                    if answer.status == 200:
                        return time.monotonic() - start
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(every)
    raise SystemExit(f"{url} not ready after {limit:.0f} s")


def find_elements(gateway, token, element_type, ids, limit=120.0):
    """Asks search (through the gateway) for every element id of `element_type` until all are
    found or `limit` passes; returns (found ids, seconds it took)."""
    found, pending = set(), sorted(set(ids))
    start = time.monotonic()
    while pending and time.monotonic() - start < limit:
        for chunk in (pending[k:k + 200] for k in range(0, len(pending), 200)):
            query = {"q": "*", "query_by": "comment", "max_hits": 250,
                     "filter_by": f"element_type:={element_type} && element_id:[" + ",".join(map(str, chunk)) + "]"}
            status, answer = call("POST", gateway + "/search", query, token)
            if status == 200:
                found.update(hit["element_id"] for hit in answer["hits"])
        pending = [i for i in pending if i not in found]
        if pending:
            time.sleep(0.2)
    return found, time.monotonic() - start
