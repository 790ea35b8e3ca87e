//! The shipped Caddyfile in front of `fountain serve`, as a deployment runs it: the real Caddy
//! (Debian's `caddy`) with its own local CA (`CERT_ISSUER=internal`) on loopback ports, every
//! role behind it, and a client (curl) that trusts only that CA's root and resolves each
//! `<service>.<domain>` to the loopback address. The seed's end-to-end flow runs over HTTPS
//! through the subdomains; plain HTTP only redirects; `/metrics` is never served publicly.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{blocking_get, eventually_blocking, fountain_command, ServeProcess};
use crate::twofa::pyotp_code;

const CADDYFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Caddyfile");
const DOMAIN: &str = "fountain.test";
const EVERY_ROLE: [&str; 7] = ["gateway", "kms", "secrets", "notify", "search", "sequence", "twofa"];
/// Every name the Caddyfile serves under the domain ("" is the domain itself), and one the
/// wildcard catches.
const SUBDOMAINS: [&str; 13] = [
    "",
    "api",
    "kms",
    "secrets",
    "notify",
    "notification",
    "twofa",
    "2fa",
    "sequence",
    "service-a",
    "search",
    "anything",
    "legacy-client",
];
const START_BOUND: Duration = Duration::from_secs(60);
const PASSWORD: &str = "caddy-edge-password-1";

/// Debian's Caddy; the test never skips when it is missing (`.ci/run` installs it).
fn caddy_bin() -> &'static str {
    let found = Command::new("caddy").arg("version").output().is_ok_and(|o| o.status.success());
    assert!(found, "Caddy is required: apt-get install caddy (.ci/run installs it)");
    "caddy"
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn host(sub: &str) -> String {
    if sub.is_empty() {
        DOMAIN.to_string()
    } else {
        format!("{sub}.{DOMAIN}")
    }
}

/// An answer through Caddy: status, lower-cased header lines and the body as JSON (`null` when
/// it is not JSON) and as text.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The JSON answer of a call that must have answered `status`.
    fn expect(self, status: u16, what: &str) -> Value {
        assert_eq!(self.status, status, "{what}: {}", self.text);
        self.json()
    }
}

/// Caddy running the shipped Caddyfile in front of a gateway, with its data (the local CA) in a
/// private directory; killed when dropped.
struct Edge {
    child: Child,
    http_port: u16,
    https_port: u16,
    root_ca: PathBuf,
}

impl Edge {
    fn start(gateway: SocketAddr, dir: &Path) -> Edge {
        let (http_port, https_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join("caddy.log")).expect("caddy log");
        let child = Command::new(caddy_bin())
            .args(["run", "--adapter", "caddyfile", "--config", CADDYFILE])
            .env("PUBLIC_DOMAIN", DOMAIN)
            .env("GATEWAY_UPSTREAM", gateway.to_string())
            .env("CERT_ISSUER", "internal")
            .env("PUBLIC_BIND_ADDRESS", "127.0.0.1")
            .env("PUBLIC_HTTP_PORT", http_port.to_string())
            .env("PUBLIC_HTTPS_PORT", https_port.to_string())
            .env("CADDY_ADMIN_ADDRESS", "off")
            .env("XDG_DATA_HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("caddy starts");
        let root_ca = dir.join("caddy/pki/authorities/local/root.crt");
        let edge = Edge { child, http_port, https_port, root_ca };
        eventually_blocking("Caddy's local CA has a root certificate", START_BOUND, || {
            edge.root_ca.exists().then_some(())
        });
        for sub in SUBDOMAINS {
            eventually_blocking(format!("https://{} answers through Caddy", host(sub)), START_BOUND, || {
                edge.try_https(sub, "GET", "/health", &[], None).filter(|r| r.status == 200)
            });
        }
        edge
    }

    /// One HTTPS request to `<sub>.<domain>`, trusting only Caddy's root; `None` when curl
    /// could not complete it (no certificate yet, nothing listening).
    fn try_https(
        &self,
        sub: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Option<Reply> {
        let url = format!("https://{}:{}{path}", host(sub), self.https_port);
        let mut curl = self.curl(sub, self.https_port);
        curl.arg("--cacert").arg(&self.root_ca).args(["-X", method]);
        for (name, value) in headers {
            curl.args(["-H", &format!("{name}: {value}")]);
        }
        if let Some(body) = body {
            curl.args(["-H", "Content-Type: application/json", "--data-binary", &body.to_string()]);
        }
        run(curl.arg(url))
    }

    fn https(&self, sub: &str, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
        self.try_https(sub, method, path, &headers, body.as_ref())
            .unwrap_or_else(|| panic!("{method} https://{}{path}: no answer", host(sub)))
    }

    fn http(&self, sub: &str, method: &str, path: &str) -> Reply {
        let url = format!("http://{}:{}{path}", host(sub), self.http_port);
        run(self.curl(sub, self.http_port).args(["-X", method]).arg(url))
            .unwrap_or_else(|| panic!("{method} http://{}{path}: no answer", host(sub)))
    }

    /// curl resolving the host to the loopback address (the name stays in SNI and Host).
    fn curl(&self, sub: &str, port: u16) -> Command {
        let mut curl = Command::new("curl");
        curl.args(["--silent", "--show-error", "--include", "--path-as-is", "--max-time", "20"])
            .args(["--resolve", &format!("{}:{port}:127.0.0.1", host(sub))]);
        curl
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl and splits its `--include` output into the final status, headers and body.
fn run(curl: &mut Command) -> Option<Reply> {
    let output = curl.output().expect("curl runs");
    if !output.status.success() {
        return None;
    }
    let raw = String::from_utf8(output.stdout).expect("utf-8 answer");
    let (head, text) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Reply { status, headers, text: text.to_string() })
}

/// fountain with every role (ephemeral ports) and a first admin, `ops`.
fn fountain_with_an_admin(dir: &Path) -> ServeProcess {
    let data = dir.join("data");
    let fast_bcrypt = ("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4");
    let mut process = ServeProcess::start(&data, &EVERY_ROLE, &[fast_bcrypt]);
    process.wait_for_message("fountain is up: ", START_BOUND);
    let password = dir.join("ops-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).expect("password file");
    let created = fountain_command(&data)
        .args(["admin", "create-user", "--username", "ops", "--role", "admin", "--password-file"])
        .arg(&password)
        .env(fast_bcrypt.0, fast_bcrypt.1)
        .output()
        .expect("fountain admin runs");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    process
}

/// Waits out the last seconds of a 30-second TOTP step, so that the activation and the step-up
/// codes computed next name the steps the server expects.
fn away_from_a_step_edge() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let left = 30 - now % 30;
    if left < 5 {
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

#[test]
fn the_seed_flow_runs_over_https_through_the_subdomains_and_metrics_stay_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fountain = fountain_with_an_admin(dir.path());
    let edge = Edge::start(fountain.addr("gateway"), dir.path());

    // Login at kms.<domain>, then step up at 2fa.<domain> / twofa.<domain> with pyotp's codes.
    let login =
        edge.https("kms", "POST", "/login", None, Some(json!({"username": "ops", "password": PASSWORD})));
    let token =
        login.expect(200, "login").get("access_token").and_then(Value::as_str).expect("token").to_string();
    let enrollment = edge.https("2fa", "POST", "/2fa/enroll", Some(&token), None).expect(200, "enrol");
    let secret = enrollment["secret"].as_str().expect("a TOTP secret");
    away_from_a_step_edge();
    let activated = edge
        .https("twofa", "POST", "/2fa/activate", Some(&token), Some(json!({"code": pyotp_code(secret, 0)})))
        .expect(200, "activate");
    assert_eq!(activated["recoveryCodes"].as_array().map(Vec::len), Some(10));
    let verified = edge
        .https("twofa", "POST", "/2fa/verify", Some(&token), Some(json!({"code": pyotp_code(secret, 1)})))
        .expect(200, "step up");
    let mfa = verified["access_token"].as_str().expect("a step-up token").to_string();

    // Without the step-up the gateway refuses a key; with it, billing gets a key and secrets.
    let refused = edge.https("kms", "POST", "/keys", Some(&token), Some(json!({"service_name": "billing"})));
    assert_eq!(refused.expect(403, "a key without the second factor")["errorCode"], "mfa_required");
    let key = edge
        .https("kms", "POST", "/keys", Some(&mfa), Some(json!({"service_name": "billing"})))
        .expect(201, "create a key");
    let api_key = key["api_key"].as_str().expect("an API key").to_string();
    let created = edge.https("secrets", "POST", "/secrets/billing", Some(&mfa), None).expect(201, "secrets");
    assert_eq!(created["version"], 1);

    // Service A at sequence.<domain> and service-a.<domain>; the outbox carries both to search.
    for (sub, id, comment) in
        [("sequence", 1, "caddy opening scene"), ("service-a", 2, "caddy closing scene")]
    {
        let element = json!({"elementType": "script", "elementId": id, "comment": comment});
        let answer =
            edge.https(sub, "POST", "/sequence", Some(&token), Some(element)).expect(201, "sequence");
        assert_eq!(answer["sequenceNumber"], id, "{sub}: {answer}");
    }
    let query = json!({"q": "caddy", "query_by": "comment", "sort_by": "sequence_number:asc"});
    let found = eventually_blocking("both elements are searchable", START_BOUND, || {
        let answer =
            edge.https("search", "POST", "/search", Some(&token), Some(query.clone())).expect(200, "search");
        (answer["found"] == 2).then_some(answer)
    });
    let ids: Vec<&Value> = found["hits"].as_array().expect("hits").iter().map(|h| &h["element_id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2)]);
    // The seed's POST /search on the gateway itself, at api.<domain>, finds the same.
    let seed_search =
        edge.https("api", "POST", "/search", Some(&token), Some(query)).expect(200, "api search");
    assert_eq!(seed_search["found"], 2);

    // Rotate at secrets.<domain>; billing reads version 2 with its API key.
    let rotated = edge
        .https("secrets", "POST", "/secrets/billing/rotate", Some(&mfa), Some(json!({})))
        .expect(200, "rotate");
    assert_eq!(rotated["version"], 2);
    let read = edge
        .try_https("secrets", "GET", "/secrets/billing", &[("X-API-KEY", &api_key)], None)
        .expect("billing reads its secrets");
    let read = read.expect(200, "billing's own read");
    assert_eq!(read["version"], 2);
    assert_eq!(read["secrets"]["JWT_SECRET"], rotated["secrets"]["JWT_SECRET"]);

    // Metrics exist on the private side (the gateway's own port), never through Caddy.
    assert_eq!(blocking_get(fountain.addr("gateway"), "/metrics", &[]).0, 200);
    for sub in SUBDOMAINS {
        for path in ["/metrics", "/kms/metrics", "/service_a/metrics"] {
            let answer = edge.https(sub, "GET", path, None, None);
            assert_eq!(answer.status, 404, "https://{}{path} must not be public", host(sub));
            assert!(!answer.text.contains("http_requests_total"), "{}{path}", host(sub));
        }
    }
    for path in
        ["//metrics", "/metrics/", "/./metrics", "/x/../metrics", "/%6detrics", "/METRICS", "/%2e/metrics"]
    {
        for sub in ["api", "kms"] {
            assert_eq!(edge.https(sub, "GET", path, None, None).status, 404, "https://{}{path}", host(sub));
        }
    }
}

#[test]
fn plain_http_redirects_to_https_and_every_answer_carries_the_security_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fountain = ServeProcess::start(&dir.path().join("data"), &EVERY_ROLE, &[]);
    let edge = Edge::start(fountain.addr("gateway"), dir.path());

    for sub in SUBDOMAINS {
        for method in ["GET", "POST"] {
            let answer = edge.http(sub, method, "/kms/health?probe=1");
            assert_eq!(answer.status, 308, "{method} http://{}: {:?}", host(sub), answer.headers);
            let location = format!("https://{}:{}/kms/health?probe=1", host(sub), edge.https_port);
            assert_eq!(answer.header("location"), Some(location.as_str()), "{}", host(sub));
        }
        // The redirect is all plain HTTP does: no route reaches the gateway.
        assert_eq!(edge.http(sub, "GET", "/metrics").status, 308);
    }

    // A JSON answer: transport security, no sniffing, no framing, no referrer, a CSP that
    // allows nothing, and no server banner.
    let health = edge.https("kms", "GET", "/health", None, None);
    assert_eq!(health.expect(200, "kms health through its subdomain")["status"], "healthy");
    let health = edge.https("kms", "GET", "/health", None, None);
    for (name, value) in [
        ("strict-transport-security", "max-age=31536000; includeSubDomains"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
    ] {
        assert_eq!(health.header(name), Some(value), "{name}: {:?}", health.headers);
    }
    assert_eq!(health.header("server"), None, "no server banner: {:?}", health.headers);

    // The pages for people (landing page, Swagger UI) load their own scripts and styles only.
    let pages_csp = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                     script-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; \
                     base-uri 'none'; form-action 'self'";
    for (sub, path) in [("kms", "/"), ("kms", "/docs/"), ("api", "/kms/docs/"), ("api", "/secrets/")] {
        let page = edge.https(sub, "GET", path, None, None);
        assert_eq!(page.status, 200, "https://{}{path}", host(sub));
        assert_eq!(page.header("content-security-policy"), Some(pages_csp), "https://{}{path}", host(sub));
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
    }

    // Swagger UI at api.<domain>/kms/docs/ reads a document whose server is the gateway prefix
    // `/kms`, so "Try it out" calls api.<domain>/kms/...
    let spec = edge.https("api", "GET", "/kms/openapi.json", None, None).expect(200, "kms's document");
    assert_eq!(spec["servers"][0]["url"], "/kms", "{}", spec["servers"]);
    let tried = edge.https("api", "GET", "/kms/.well-known/jwks.json", None, None).expect(200, "try it out");
    assert!(tried["keys"].as_array().is_some_and(|k| !k.is_empty()), "{tried}");
}
