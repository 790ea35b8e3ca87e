//! Every role as its own `fountain serve --role X` process over one PostgreSQL database, as
//! compose runs one container per role: provisioned by `fountain admin issue-credential --all`,
//! each process given only its own credential file and the master key file, each in its own
//! network namespace (distinct loopback addresses where namespaces cannot be made), and the
//! seed's end-to-end flow driven through the gateway process.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{
    blocking_call as call, blocking_get, eventually_blocking, fountain_bin, fountain_command, Backend,
    ServeProcess, TestDatabase, PASSWORD,
};

/// Start order: kms and secrets first (every other role's start-up asks them), the gateway last.
const ROLES: [&str; 7] = ["kms", "secrets", "notify", "twofa", "search", "sequence", "gateway"];

/// Generous: a role's start-up retries back off up to 5 s while the suite loads two cores.
const BOUND: Duration = Duration::from_secs(90);

/// Who the audit trail names for the provisioning commands.
const OPERATOR: &str = "deployer";

/// The port every role listens on inside its own namespace (as each container's 8080).
const NAMESPACE_PORT: u16 = 8080;

// ---- the network: one namespace per role, or loopback ----

/// `ip …`, its failure as one line.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// A bridge in the root namespace and one namespace per role joined to it by a veth pair
/// (addresses 10.A.B.2…), plus a forwarder from the bridge's address to PostgreSQL, which
/// listens on 127.0.0.1 only. Everything is removed on drop, whatever happened.
struct Namespaces {
    prefix: String,
    bridge: String,
    bridge_ip: IpAddr,
    by_role: BTreeMap<&'static str, (String, IpAddr)>,
    made: Vec<String>,
    forwarder: Option<Child>,
}

impl Namespaces {
    fn create(postgres: SocketAddr) -> Result<Namespaces, String> {
        let id = std::process::id();
        let prefix = format!("fp{}", id % 100_000);
        let subnet = format!("10.{}.{}", 200 + id % 50, (id / 50) % 250);
        let routes = Command::new("ip").args(["-4", "route", "show", &format!("{subnet}.0/24")]).output();
        if routes.map_err(|e| format!("ip: {e}"))?.stdout.iter().any(|b| !b.is_ascii_whitespace()) {
            return Err(format!("{subnet}.0/24 is already routed on this host"));
        }
        let mut nets = Namespaces {
            bridge: format!("{prefix}br"),
            bridge_ip: format!("{subnet}.1").parse().unwrap(),
            prefix,
            by_role: BTreeMap::new(),
            made: Vec::new(),
            forwarder: None,
        };
        ip(&["link", "add", &nets.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", nets.bridge_ip), "dev", &nets.bridge])?;
        ip(&["link", "set", &nets.bridge, "up"])?;
        for (n, role) in ROLES.iter().enumerate() {
            let (ns, host_side, ns_side) = (
                format!("{}-{role}", nets.prefix),
                format!("{}h{n}", nets.prefix),
                format!("{}n{n}", nets.prefix),
            );
            let addr: IpAddr = format!("{subnet}.{}", n + 2).parse().unwrap();
            ip(&["netns", "add", &ns])?;
            nets.made.push(ns.clone());
            ip(&["link", "add", &host_side, "type", "veth", "peer", "name", &ns_side])?;
            ip(&["link", "set", &ns_side, "netns", &ns])?;
            ip(&["link", "set", &host_side, "master", &nets.bridge])?;
            ip(&["link", "set", &host_side, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &ns_side])?;
            ip(&["-n", &ns, "link", "set", &ns_side, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            nets.by_role.insert(role, (ns, addr));
        }
        nets.forward_postgres(postgres)?;
        nets.probe(postgres.port())?;
        Ok(nets)
    }

    /// Whether traffic really flows between two namespaces and from a namespace to the
    /// forwarder (a host firewall may drop bridged traffic): a refusal here means loopback.
    fn probe(&self, postgres_port: u16) -> Result<(), String> {
        let ((from, _), (to, to_ip)) = (&self.by_role["gateway"], &self.by_role["kms"]);
        let listen = format!("TCP-LISTEN:{NAMESPACE_PORT},bind={to_ip},reuseaddr");
        let mut listener = Command::new("ip")
            .args(["netns", "exec", to, "socat", "-u", &listen, "OPEN:/dev/null"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("socat: {e}"))?;
        let connect = |target: String| {
            let target = format!("TCP:{target},connect-timeout=2");
            Command::new("ip")
                .args(["netns", "exec", from, "socat", "-u", "OPEN:/dev/null", &target])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // The listener may need a moment to bind: a few attempts, each bounded by its timeout.
        let mut between = false;
        for _ in 0..20 {
            between = connect(format!("{to_ip}:{NAMESPACE_PORT}"));
            if between {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = listener.kill();
        let _ = listener.wait();
        if !between {
            return Err(format!("no TCP from namespace {from} to {to_ip} across the bridge"));
        }
        if !connect(format!("{}:{postgres_port}", self.bridge_ip)) {
            return Err(format!("no TCP from namespace {from} to the forwarder at {}", self.bridge_ip));
        }
        Ok(())
    }

    /// `socat` on the bridge's address in front of PostgreSQL: the roles reach the database as
    /// containers reach a `postgres` service, and PostgreSQL still sees a 127.0.0.1 client.
    fn forward_postgres(&mut self, postgres: SocketAddr) -> Result<(), String> {
        let listen = format!("TCP-LISTEN:{},bind={},reuseaddr,fork", postgres.port(), self.bridge_ip);
        let child = Command::new("socat")
            .args([listen, format!("TCP:{postgres}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("socat: {e}"))?;
        self.forwarder = Some(child);
        let at = SocketAddr::new(self.bridge_ip, postgres.port());
        for _ in 0..50 {
            if TcpStream::connect_timeout(&at, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("the PostgreSQL forwarder does not listen on {at}"))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if let Some(mut forwarder) = self.forwarder.take() {
            let _ = forwarder.kill();
            let _ = forwarder.wait();
        }
        // The host side first: a namespace still held by a closing socket would keep the pair.
        for n in 0..self.made.len() {
            let _ = ip(&["link", "del", &format!("{}h{n}", self.prefix)]);
        }
        for ns in &self.made {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Where the roles run and how a role's process is started.
struct Placement {
    mode: String,
    addrs: BTreeMap<&'static str, SocketAddr>,
    database_url: String,
    namespaces: Option<Namespaces>,
}

impl Placement {
    /// Namespaces when they can be made here (tried, and undone if any step fails); distinct
    /// 127.0.0.x addresses otherwise.
    fn choose(database_url: &str) -> Placement {
        let parsed = url::Url::parse(database_url).expect("a PostgreSQL URL");
        let postgres: SocketAddr = format!(
            "{}:{}",
            parsed.host_str().expect("a host").replace("localhost", "127.0.0.1"),
            parsed.port().unwrap_or(5432)
        )
        .parse()
        .expect("PostgreSQL at an IP address");
        // FOUNTAIN_TEST_NO_NETNS runs the loopback placement where namespaces would work.
        let namespaces = match std::env::var_os("FOUNTAIN_TEST_NO_NETNS") {
            Some(_) => Err("FOUNTAIN_TEST_NO_NETNS is set".to_string()),
            None => Namespaces::create(postgres),
        };
        match namespaces {
            Ok(nets) => {
                let addrs = nets
                    .by_role
                    .iter()
                    .map(|(role, (_, ip))| (*role, SocketAddr::new(*ip, NAMESPACE_PORT)))
                    .collect();
                let mut url = parsed.clone();
                url.set_host(Some(&nets.bridge_ip.to_string())).unwrap();
                Placement {
                    mode: format!("network namespaces ({}/24 via bridge {})", nets.bridge_ip, nets.bridge),
                    addrs,
                    database_url: url.to_string(),
                    namespaces: Some(nets),
                }
            }
            Err(reason) => Placement {
                mode: format!("loopback addresses 127.0.0.2-8 (no network namespaces: {reason})"),
                addrs: ROLES
                    .iter()
                    .enumerate()
                    .map(|(n, role)| (*role, free_loopback(n as u8 + 2)))
                    .collect(),
                database_url: database_url.to_string(),
                namespaces: None,
            },
        }
    }

    fn url(&self, role: &str) -> String {
        format!("http://{}", self.addrs[role])
    }

    /// `fountain serve --role <role>` in the role's namespace (or on its loopback address),
    /// with only what a container gets: its own data directory, the master key file, a
    /// credentials directory holding its own `<role>.key`, and where its peers are.
    fn start(&self, role: &'static str, root: &Path, master_key: &Path) -> ServeProcess {
        let mut command = match &self.namespaces {
            Some(nets) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &nets.by_role[role].0, fountain_bin()]);
                command
            }
            None => Command::new(fountain_bin()),
        };
        for (key, _) in std::env::vars() {
            if key.starts_with("FOUNTAIN_") || key == "DATABASE_URL" {
                command.env_remove(key);
            }
        }
        let upper = role.to_uppercase();
        let addr = self.addrs[role];
        command
            .arg("--data-dir")
            .arg(root.join(role).join("data"))
            .args(["serve", "--role", role])
            .env("FOUNTAIN_DATABASE__URL", &self.database_url)
            .env("FOUNTAIN_SECURITY__MASTER_KEY_FILE", master_key)
            .env("FOUNTAIN_SECURITY__CREDENTIALS_DIR", root.join(role).join("credentials"))
            .env(format!("FOUNTAIN_ROLES__{upper}__HOST"), addr.ip().to_string())
            .env(format!("FOUNTAIN_ROLES__{upper}__PORT"), addr.port().to_string())
            .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
            .env("FOUNTAIN_ROLES__NOTIFY__POLL_INTERVAL_MS", "100")
            .env("FOUNTAIN_ROLES__SEQUENCE__POLL_INTERVAL_MS", "100")
            // The roles register their 10.x addresses with the gateway, as on a compose network.
            .env("FOUNTAIN_ROLES__GATEWAY__REGISTRY_ALLOWED_NETWORKS", r#"["10.0.0.0/8"]"#);
        for peer in ROLES {
            command.env(format!("FOUNTAIN_PEERS__{}", peer.to_uppercase()), self.url(peer));
        }
        ServeProcess::from_command(command, &[role])
    }
}

/// A port free now on 127.0.0.`host`.
fn free_loopback(host: u8) -> SocketAddr {
    let listener =
        TcpListener::bind((std::net::Ipv4Addr::new(127, 0, 0, host), 0)).expect("bind a loopback port");
    listener.local_addr().unwrap()
}

// ---- provisioning ----

/// `fountain admin …` against the provisioning data directory, as the operator `deployer`.
fn admin(data: &Path, database_url: &str, args: &[&str]) -> String {
    let output = fountain_command(data)
        .arg("admin")
        .args(args)
        .env("FOUNTAIN_DATABASE__URL", database_url)
        .env("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4")
        .env("USER", OPERATOR)
        .output()
        .expect("fountain admin runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "fountain admin {args:?}: {} (stderr: {}; stdout: {stdout})",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().filter(|l| !l.starts_with('{')).collect::<Vec<_>>().join("\n")
}

/// Each role's credentials directory holds its own key file and nothing else (as a Docker
/// secret or a systemd `LoadCredential=` gives it).
fn hand_out_credentials(issued: &Path, root: &Path) {
    for role in ROLES {
        let dir = root.join(role).join("credentials");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(issued.join(format!("{role}.key")), dir.join(format!("{role}.key"))).unwrap();
    }
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn secrets_version(addr: SocketAddr) -> Option<i64> {
    let (_, _, text) = blocking_get(addr, "/metrics", &[]);
    text.lines().find(|l| l.starts_with("fountain_secrets_version "))?.rsplit(' ').next()?.parse().ok()
}

fn token_of(answer: &Value) -> String {
    answer["access_token"].as_str().unwrap_or_else(|| panic!("no access_token in {answer}")).to_string()
}

// ---- the tests ----

#[test]
fn every_role_in_its_own_process_and_network_runs_the_seed_flow_and_follows_rotations() {
    let database = TestDatabase::create(Backend::Postgres);
    let placement = Placement::choose(&database.url);
    eprintln!("per-role mode: {}", placement.mode);
    let root = database.dir.path();
    let provisioning = root.join("provisioning");
    let issued = root.join("issued");

    // The one-shot provisioning: every role's API key, secret set and credential file.
    let first = admin(
        &provisioning,
        &database.url,
        &["issue-credential", "--all", "--init", "--out-dir", issued.to_str().unwrap()],
    );
    for role in ROLES {
        let file = issued.join(format!("{role}.key"));
        assert!(
            first.contains(&format!("issued {role} credential (new API key) -> {}", file.display())),
            "{first}"
        );
        assert_eq!(mode_of(&file), 0o600, "{role}.key");
    }
    let again = admin(
        &provisioning,
        &database.url,
        &["issue-credential", "--all", "--out-dir", issued.to_str().unwrap()],
    );
    assert_eq!(
        again.lines().filter(|l| l.contains("credential (unchanged)")).count(),
        ROLES.len(),
        "{again}"
    );
    let password_file = root.join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    admin(
        &provisioning,
        &database.url,
        &[
            "create-user",
            "--username",
            "root",
            "--role",
            "admin",
            "--password-file",
            password_file.to_str().unwrap(),
        ],
    );
    hand_out_credentials(&issued, root);
    let master_key = provisioning.join("master.key");

    let mut processes: BTreeMap<&str, ServeProcess> = BTreeMap::new();
    for role in ROLES {
        processes.insert(role, placement.start(role, root, &master_key));
    }
    for role in ROLES {
        let process = processes.get_mut(role).unwrap();
        process.wait_for_message("fountain is up: ", BOUND);
        assert!(
            !process.log_lines.iter().any(|l| l.contains("no service credential")),
            "{role} found its credential: {:?}",
            process.log_lines
        );
    }
    eventually_blocking("every role to load version 1 of its secrets", BOUND, || {
        ROLES.iter().all(|role| secrets_version(placement.addrs[role]) == Some(1)).then_some(())
    });

    // The seed's flow, all through the gateway process.
    let gateway = placement.addrs["gateway"];
    let (status, session) =
        call(gateway, "POST", "/kms/login", None, Some(json!({"username": "root", "password": PASSWORD})));
    assert_eq!(status, 200, "{session}");
    let admin_token = token_of(&session);
    let (status, refused) =
        call(gateway, "POST", "/kms/keys", Some(&admin_token), Some(json!({"service_name": "client_app"})));
    assert_eq!((status, refused["errorCode"].as_str()), (403, Some("mfa_required")), "{refused}");
    let (status, enrollment) = call(gateway, "POST", "/twofa/2fa/enroll", Some(&admin_token), None);
    assert_eq!(status, 200, "{enrollment}");
    let secret = enrollment["secret"].as_str().unwrap();
    let code = crate::twofa::pyotp_code(secret, 0);
    let (status, activated) =
        call(gateway, "POST", "/twofa/2fa/activate", Some(&admin_token), Some(json!({"code": code})));
    assert_eq!(status, 200, "{activated}");
    let code = crate::twofa::pyotp_code(secret, 1);
    let (status, stepped) =
        call(gateway, "POST", "/twofa/2fa/verify", Some(&admin_token), Some(json!({"code": code})));
    assert_eq!(status, 200, "{stepped}");
    let step_up = token_of(&stepped);

    let (status, key) =
        call(gateway, "POST", "/kms/keys", Some(&step_up), Some(json!({"service_name": "client_app"})));
    assert_eq!((status, key["service_name"].as_str()), (201, Some("client_app")), "{key}");

    let (status, _) = call(
        gateway,
        "POST",
        "/kms/register",
        None,
        Some(json!({"username": "writer", "password": PASSWORD})),
    );
    assert_eq!(status, 201);
    let (_, writer) =
        call(gateway, "POST", "/kms/login", None, Some(json!({"username": "writer", "password": PASSWORD})));
    let writer = token_of(&writer);
    let element = json!({"elementType": "script", "elementId": 1, "comment": "Test sequence generation."});
    let (status, created) = call(gateway, "POST", "/service_a/sequence", Some(&writer), Some(element));
    assert_eq!(
        (status, created),
        (201, json!({"sequenceNumber": 1, "comment": "Test sequence generation."}))
    );
    let query = json!({"q": "script", "query_by": "element_type"});
    let found = eventually_blocking("the element to be found by POST /search", BOUND, || {
        let (status, answer) = call(gateway, "POST", "/search", Some(&writer), Some(query.clone()));
        (status == 200 && answer["found"] == 1).then_some(answer)
    });
    assert_eq!(found["hits"][0]["id"], "script_1_1", "{found}");

    // A rotation of each role's secrets reaches that role in its own process.
    for role in ROLES {
        let (status, rotated) =
            call(gateway, "POST", &format!("/secrets/secrets/{role}/rotate"), Some(&step_up), None);
        assert_eq!((status, rotated["version"].as_i64()), (200, Some(2)), "{role}: {rotated}");
    }
    eventually_blocking("every role to swap in version 2 of its secrets", BOUND, || {
        ROLES.iter().all(|role| secrets_version(placement.addrs[role]) == Some(2)).then_some(())
    });

    // Each role registered the address it listens on with the gateway (heartbeats every 10 s).
    eventually_blocking("every role registered at its own address", BOUND, || {
        let (_, registry) = call(gateway, "GET", "/registry", Some(&admin_token), None);
        let dynamic: Vec<(String, String)> = registry["entries"]
            .as_array()?
            .iter()
            .filter(|e| e["static"] == false)
            .map(|e| {
                (
                    e["service"].as_str().unwrap_or_default().into(),
                    e["url"].as_str().unwrap_or_default().into(),
                )
            })
            .collect();
        ROLES.iter().all(|role| dynamic.contains(&(role.to_string(), placement.url(role)))).then_some(())
    });

    // Every credential issued is on record under the operator who issued it.
    let (status, audit) =
        call(gateway, "GET", &format!("/kms/audit?actor=cli:{OPERATOR}&limit=500"), Some(&admin_token), None);
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    for role in ROLES {
        let issues = entries.iter().filter(|e| e["action"] == "keys.issue" && e["target"] == role).count();
        assert_eq!(issues, 2, "{role}: issued twice, audited twice: {audit}");
        assert!(
            entries.iter().any(|e| e["action"] == "secrets.create" && e["target"] == role),
            "{role}: {audit}"
        );
    }
    drop(processes);
    eprintln!("per-role mode: {} — flow passed", placement.mode);
}

/// A role started alone without its credential says which file it looked for and the command
/// that creates it.
#[test]
fn a_role_without_its_credential_names_the_file_and_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("empty-credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    let mut process = ServeProcess::start(
        &dir.path().join("data"),
        &["notify"],
        &[("FOUNTAIN_SECURITY__CREDENTIALS_DIR", credentials.to_str().unwrap())],
    );
    let warning = process.wait_for_message("no service credential", BOUND);
    let file: PathBuf = credentials.join("notify.key");
    assert_eq!(warning["level"], "WARN");
    assert_eq!(
        warning["message"],
        format!(
            "no service credential {}: role notify cannot load its secrets or register with the gateway; \
             create it with `fountain admin issue-credential --service notify` (or set \
             security.credentials_dir to the directory that holds notify.key)",
            file.display()
        )
    );
}

/// One role's credential to a file of its own: the same key as the bulk form wrote.
#[test]
fn issuing_one_roles_credential_to_a_file_writes_the_key_the_bulk_form_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = format!("sqlite://{}", dir.path().join("fountain.db").display());
    admin(&data, &url, &["issue-credential", "--all", "--init"]);
    let single = dir.path().join("secrets").join("notify.key");
    let written =
        admin(&data, &url, &["issue-credential", "--service", "notify", "--out", single.to_str().unwrap()]);
    assert_eq!(written, format!("issued notify credential (existing API key) -> {}", single.display()));
    let bulk = data.join("credentials").join("notify.key");
    assert_eq!(std::fs::read_to_string(&single).unwrap(), std::fs::read_to_string(&bulk).unwrap());
    assert_eq!(mode_of(&single), 0o600);
    assert!(std::fs::read_to_string(&single).unwrap().trim().len() >= 32, "a real key");
}
