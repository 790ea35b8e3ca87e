//! The shipped deployment files, proven on this machine without a Docker engine: the Dockerfile's
//! build stage builds from exactly the files it copies, `fountain healthcheck` tells a live role
//! from a dead one, docker-compose.yml agrees with the configuration schema, and every metric the
//! Prometheus rules and the Grafana dashboard query is one fountain really exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{
    blocking_call, blocking_get, eventually, fountain_command, ServeProcess, Subscriber, PASSWORD,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// The build stage of a Dockerfile: its WORKDIR, COPY lines (sources, destination) and RUN lines.
#[derive(Debug, Default)]
struct BuildStage {
    workdir: String,
    copies: Vec<(Vec<String>, String)>,
    runs: Vec<String>,
}

/// Joins continuation lines, drops comments, and reads the first stage (up to the second FROM).
fn build_stage(dockerfile: &str) -> BuildStage {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => current.push_str(&format!("{head} ")),
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stage = BuildStage { workdir: "/".into(), ..Default::default() };
    let mut froms = 0;
    for line in logical {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let rest = rest.trim();
        match instruction.to_ascii_uppercase().as_str() {
            "FROM" => {
                froms += 1;
                if froms == 2 {
                    break;
                }
            }
            "WORKDIR" => stage.workdir = rest.to_string(),
            "COPY" | "ADD" => {
                assert!(!rest.starts_with("--from"), "the build stage copies from the context only: {line}");
                let mut words: Vec<String> = rest.split_whitespace().map(String::from).collect();
                let destination = words.pop().expect("COPY has a destination");
                stage.copies.push((words, destination));
            }
            "RUN" => stage.runs.push(rest.to_string()),
            _ => {}
        }
    }
    stage
}

/// Copies exactly the files the stage's COPY lines name from the repository into `root`, where
/// `root` plays the stage's WORKDIR.
fn copy_context(stage: &BuildStage, root: &Path, skip: Option<&str>) {
    for (sources, destination) in &stage.copies {
        let destination = destination.strip_prefix(&format!("{}/", stage.workdir)).unwrap_or(destination);
        for source in sources {
            if Some(source.as_str()) == skip {
                continue;
            }
            let into_dir = destination.ends_with('/') || destination == "." || sources.len() > 1;
            let target = if into_dir {
                root.join(destination).join(Path::new(source).file_name().unwrap())
            } else {
                root.join(destination)
            };
            copy_tree(&repo().join(source), &target);
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("COPY {}: {e}", from.display()));
    }
}

/// The stage's `cargo build …` command, run as `cargo check` with the same flags but without
/// `--release`: manifest loading (every declared target's path), dependency resolution under
/// `--locked`, and every `include_str!`/`embed_migrations!` the sources need are all decided
/// there, and the repository's own target dir supplies the already-checked dependencies instead
/// of a 10-minute fat-LTO release build.
fn cargo_check_like_the_dockerfile(stage: &BuildStage, root: &Path) -> Output {
    let build = stage
        .runs
        .iter()
        .find(|run| run.trim_start().starts_with("cargo build"))
        .unwrap_or_else(|| panic!("no `RUN cargo build` in the build stage: {:?}", stage.runs));
    assert!(!build.contains("&&") && !build.contains(';'), "keep `RUN cargo build …` one command: {build}");
    let words: Vec<&str> = build.split_whitespace().collect();
    assert!(words.contains(&"--locked"), "the image builds from Cargo.lock: {build}");
    let args: Vec<&str> = words[2..].iter().copied().filter(|w| *w != "--release").collect();
    Command::new(env!("CARGO"))
        .arg("check")
        .args(&args)
        .current_dir(root)
        .env("CARGO_TARGET_DIR", repo().join("target"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs")
}

#[test]
fn the_dockerfile_build_stage_builds_from_exactly_the_files_it_copies() {
    let stage = build_stage(&read("Dockerfile"));
    let copied: BTreeSet<&str> =
        stage.copies.iter().flat_map(|(s, _)| s.iter().map(String::as_str)).collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src", "migrations", "config", "benches"] {
        assert!(copied.contains(needed), "the build stage does not COPY {needed}: {copied:?}");
    }

    let context = tempfile::tempdir().unwrap();
    copy_context(&stage, context.path(), None);
    let output = cargo_check_like_the_dockerfile(&stage, context.path());
    assert!(output.status.success(), "the build stage fails: {}", String::from_utf8_lossy(&output.stderr));

    // The check is real: without the benchmarks Cargo.toml declares, the same command fails the
    // way `docker build` did before `COPY benches` existed.
    let without_benches = tempfile::tempdir().unwrap();
    copy_context(&stage, without_benches.path(), Some("benches"));
    let output = cargo_check_like_the_dockerfile(&stage, without_benches.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a build without benches/ must fail");
    assert!(stderr.contains("can't find `jwt_verify` bench at `benches/jwt_verify.rs`"), "{stderr}");
}

#[test]
fn the_runtime_image_is_small_non_root_and_checks_its_own_health() {
    let dockerfile = read("Dockerfile");
    let runtime = dockerfile.split("\nFROM ").nth(2).expect("a second (runtime) stage");
    assert!(runtime.starts_with("debian:bookworm-slim") || runtime.starts_with("gcr.io/distroless/cc"));
    assert!(runtime.contains("\nUSER 10001:10001"), "the runtime runs as a non-root uid");
    assert!(!runtime.contains("curl"), "no curl in the runtime image");
    assert!(runtime.contains(r#"CMD ["/usr/local/bin/fountain", "healthcheck"]"#));
    assert!(runtime.contains("FOUNTAIN_ROLE=all"));
}

// ---------------------------------------------------------------------------------------------
// fountain healthcheck

#[test]
fn healthcheck_exits_0_for_a_live_role_and_1_with_one_line_for_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = ServeProcess::start(&data, &["kms"], &[]);
    let port = serve.addr("kms").port().to_string();
    let probe = |role: &str, port: &str| {
        let mut command = fountain_command(&data);
        command.args(["healthcheck", "--timeout-ms", "2000"]).env("FOUNTAIN_ROLE", role);
        command.env("FOUNTAIN_ROLES__KMS__PORT", port).env("FOUNTAIN_ROLES__SECRETS__PORT", "1");
        command.output().unwrap()
    };

    let live = probe("kms", &port);
    assert_eq!(live.status.code(), Some(0), "{}", String::from_utf8_lossy(&live.stderr));
    assert_eq!(String::from_utf8_lossy(&live.stdout).trim(), "healthy: kms");

    // secrets is not running: its port (1) refuses the connection.
    let dead = probe("kms,secrets", &port);
    let stderr = String::from_utf8_lossy(&dead.stderr);
    assert_eq!(dead.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: unhealthy: secrets (http://127.0.0.1:1/health): cannot connect"),
        "{stderr}"
    );

    serve.signal("TERM");
    serve.wait(std::time::Duration::from_secs(30));
    let after = probe("kms", &port);
    assert_eq!(after.status.code(), Some(1));
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

/// A YAML file as JSON, read by Python's yaml (anchors and `<<` merges resolved as compose does).
fn yaml(path: &str) -> Value {
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let output = Command::new("python3").args(["-c", script]).arg(repo().join(path)).output().unwrap();
    assert!(output.status.success(), "{path}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn env_of(service: &Value) -> BTreeMap<String, String> {
    let env = service["environment"].as_object().cloned().unwrap_or_default();
    env.into_iter().map(|(k, v)| (k, v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))).collect()
}

/// `fountain config check` with exactly this environment: the effective configuration.
fn config_check(env: &BTreeMap<String, String>) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut command = fountain_command(&dir.path().join("data"));
    command.args(["config", "check"]).envs(env);
    let output = command.output().unwrap();
    assert!(output.status.success(), "{env:?} is refused: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A variable whose name says it holds a secret (rather than a `*_FILE` path to one). Words are
/// the name's `_`-separated parts, so the `secrets` role's name (`FOUNTAIN_PEERS__SECRETS`) is not
/// one.
fn looks_like_a_secret(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let words: Vec<&str> = name.split('_').filter(|w| !w.is_empty()).collect();
    let secretive =
        |w: &&str| matches!(*w, "PASSWORD" | "PASSWD" | "SECRET" | "TOKEN" | "PRIVATE" | "KEY" | "APIKEY");
    words.iter().any(secretive) && words.last() != Some(&"FILE")
}

#[test]
fn secret_variables_are_told_from_file_paths_and_role_names() {
    for literal in ["POSTGRES_PASSWORD", "TYPESENSE_API_KEY", "GF_SECURITY_ADMIN_PASSWORD", "FOUNTAIN_SECRET"]
    {
        assert!(looks_like_a_secret(literal), "{literal}");
    }
    for fine in [
        "POSTGRES_PASSWORD_FILE",
        "FOUNTAIN_MASTER_KEY_FILE",
        "GF_SECURITY_ADMIN_PASSWORD__FILE",
        "FOUNTAIN_PEERS__SECRETS",
    ] {
        assert!(!looks_like_a_secret(fine), "{fine}");
    }
}

#[test]
fn compose_runs_every_role_from_one_image_consistent_with_the_configuration() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().unwrap();
    let prometheus = read("deploy/prometheus.yml");
    let port_of = |role: &str| {
        let role = fountain::roles::find(role).unwrap();
        role.default_port()
    };

    for role in fountain::roles::ALL {
        let name = role.name();
        let service = services.get(name).unwrap_or_else(|| panic!("no compose service for {name}"));
        assert_eq!(service["build"], ".", "{name} is built from the one Dockerfile");
        assert_eq!(service["image"], "fountain:latest");
        assert_eq!(service["command"], serde_json::json!(["serve"]));
        let env = env_of(service);
        assert_eq!(env.get("FOUNTAIN_ROLE").map(String::as_str), Some(name));

        // The real binary accepts the service's environment, and what it makes of it agrees
        // with the rest of the file.
        let config = config_check(&env);
        let port = config["roles"][name]["port"].as_u64().map(|p| p as u16).unwrap_or(role.default_port());
        assert_eq!(port, port_of(name));
        assert_eq!(service["expose"], serde_json::json!([port.to_string()]), "{name}");
        assert_eq!(config["server"]["host"], "0.0.0.0");
        for peer in fountain::roles::ALL {
            let expected = format!("http://{}:{}", peer.name(), port_of(peer.name()));
            assert_eq!(config["peers"][peer.name()], expected.as_str(), "{name}: peers.{}", peer.name());
            assert!(services.contains_key(peer.name()));
        }
        assert!(prometheus.contains(&format!("[\"{name}:{port}\"]")), "Prometheus scrapes {name}:{port}");
        assert_eq!(config["roles"]["search"]["backend"], "typesense");
        assert_eq!(config["roles"]["search"]["typesense_url"], "http://typesense:8108");

        // The secrets the role reads are mounted where its configuration looks for them.
        let mounted: BTreeSet<&str> =
            service["secrets"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        for secret in ["master.key", "db_password", &format!("{name}.key")] {
            assert!(mounted.contains(secret), "{name} mounts {secret}");
        }
        assert_eq!(env["FOUNTAIN_MASTER_KEY_FILE"], "/run/secrets/master.key");
        assert_eq!(env["FOUNTAIN_SECURITY__CREDENTIALS_DIR"], "/run/secrets");
        assert_eq!(env["FOUNTAIN_DATABASE__PASSWORD_FILE"], "/run/secrets/db_password");
        assert!(env["FOUNTAIN_DATABASE__URL"].starts_with("postgres://fountain@postgres:5432/"));
        assert_eq!(
            service["healthcheck"]["test"],
            serde_json::json!(["CMD", "/usr/local/bin/fountain", "healthcheck"])
        );
        assert!(service.get("ports").is_none(), "{name} is reached through Caddy, not published");
    }
    let gateway_port = port_of("gateway");
    assert_eq!(
        services["caddy"]["environment"]["GATEWAY_UPSTREAM"],
        format!("gateway:{gateway_port}").as_str()
    );
    for extra in ["caddy", "postgres", "typesense", "prometheus", "grafana"] {
        assert!(services.contains_key(extra), "compose runs {extra}");
    }
    assert_eq!(services["typesense"]["image"], "typesense/typesense:0.24.1");

    // The one-shot provisioning runs the bulk credential command before kms (and so every role).
    let provision = &services["provision"];
    assert_eq!(
        provision["command"],
        serde_json::json!(["admin", "issue-credential", "--all", "--out-dir", "/out"])
    );
    assert_eq!(provision["restart"], "no");
    assert_eq!(services["kms"]["depends_on"]["provision"]["condition"], "service_completed_successfully");
}

#[test]
fn compose_holds_no_secret_and_waits_only_on_healthy_services() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().unwrap();

    for (name, secret) in compose["secrets"].as_object().unwrap() {
        let file = secret["file"].as_str().unwrap_or_else(|| panic!("secret {name} is not a file"));
        assert!(file.starts_with("./secrets/"), "{name}: {file}");
        assert_eq!(secret.as_object().unwrap().len(), 1, "{name}: a file and nothing else");
    }
    let text = read("docker-compose.yml");
    assert!(!text.contains("environment: ["), "environment as a map, so every name is checked");
    for (name, service) in services {
        for (key, value) in env_of(service) {
            assert!(!looks_like_a_secret(&key), "{name}: {key} holds a literal; use a *_FILE secret");
            assert!(!value.contains(":@") && !value.contains("password="), "{name}: {key}");
            if let Ok(url) = url::Url::parse(&value) {
                assert!(url.password().is_none(), "{name}: {key} has a password in its URL");
            }
        }
        for (target, condition) in service["depends_on"].as_object().cloned().unwrap_or_default() {
            let condition = condition["condition"].as_str().unwrap_or("");
            let waited = &services[&target];
            if condition == "service_completed_successfully" {
                assert_eq!(waited["restart"], "no", "{name} waits for one-shot {target}");
                continue;
            }
            assert_eq!(condition, "service_healthy", "{name} -> {target}");
            let check = &waited["healthcheck"];
            assert!(check["test"].is_array(), "{name} waits for {target}, which has no healthcheck");
            assert_ne!(check["disable"], true, "{target}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus, alerts, Grafana

/// Metric names the rules and the dashboard use that fountain does not export, and who does.
const EXTERNAL_METRICS: &[(&str, &str)] = &[
    ("up", "Prometheus, per scrape target"),
    ("probe_success", "the blackbox exporter's TLS probe of Caddy"),
    ("probe_ssl_earliest_cert_expiry", "the blackbox exporter's TLS probe of Caddy"),
];

/// The metric names a PromQL expression reads: identifiers that are not functions, keywords,
/// label names, label values or range durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    let mut depth_braces = 0;
    let mut in_brackets = false;
    for c in expr.chars() {
        match c {
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            _ if depth_braces > 0 || in_brackets => {}
            _ => cleaned.push(c),
        }
    }
    let grouping = regex_lite_grouping(&cleaned);
    let keywords = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
    ];
    let mut names = BTreeSet::new();
    let chars: Vec<char> = grouping.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let is_call = chars[i..].iter().find(|c| !c.is_whitespace()) == Some(&'(');
            let preceded_by_digit = start > 0 && chars[start - 1].is_ascii_digit();
            if !is_call && !preceded_by_digit && !keywords.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Drops `by (…)` / `without (…)` label lists.
fn regex_lite_grouping(expr: &str) -> String {
    let mut out = expr.to_string();
    for keyword in ["by", "without"] {
        while let Some(at) = find_word(&out, keyword) {
            let open = out[at..].find('(').map(|o| at + o).unwrap();
            let close = out[open..].find(')').map(|c| open + c).unwrap();
            out.replace_range(at..=close, " ");
        }
    }
    out
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().last().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        let after =
            text[at + word.len()..].chars().next().is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        before && after
    })
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (role, le) (rate(http_request_duration_seconds_bucket{role="kms"}[5m]))) > 1"#,
    );
    assert_eq!(names, BTreeSet::from(["http_request_duration_seconds_bucket".to_string()]));
    let names = metric_names("probe_ssl_earliest_cert_expiry - time() < 14 * 86400 and up == 0");
    assert_eq!(names, BTreeSet::from(["probe_ssl_earliest_cert_expiry".to_string(), "up".to_string()]));
}

/// Every PromQL expression of the alert rules and the dashboard, with where it is.
fn shipped_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for group in yaml("deploy/alerts.yml")["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            queries.push((format!("alert {}", rule["alert"]), rule["expr"].as_str().unwrap().to_string()));
        }
    }
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/dashboards/fountain.json")).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((format!("panel {}", panel["title"]), target["expr"].as_str().unwrap().to_string()));
        }
    }
    queries
}

#[test]
fn promtool_accepts_the_config_and_the_rules_and_every_alert_fires_in_its_unit_test() {
    let deploy = repo().join("deploy");
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
        &["test", "rules", "alerts.test.yml"],
    ] {
        let output =
            Command::new("promtool").args(args).current_dir(&deploy).output().expect("promtool is installed");
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Every alert has a unit test.
    let tests = read("deploy/alerts.test.yml");
    for group in yaml("deploy/alerts.yml")["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            assert!(tests.contains(&format!("alertname: {alert}\n")), "no unit test for {alert}");
        }
    }
}

#[test]
fn the_dashboard_has_a_panel_per_role() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/dashboards/fountain.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    for role in fountain::roles::ALL {
        let selector = format!("role=\"{}\"", role.name());
        let found = panels.iter().any(|panel| {
            panel["title"].as_str().is_some_and(|t| t.starts_with(&format!("{}:", role.name())))
                && panel["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|t| t["expr"].as_str().unwrap().contains(&selector))
        });
        assert!(found, "no panel for {}", role.name());
    }
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{}", panel["title"]);
    }
}

/// Starts every role as the real `fountain serve`, makes the traffic that brings each labelled
/// family into being (logins, a refused token at the gateway, a webhook delivery, health probes),
/// then checks that every metric the rules and the dashboard read is in some role's /metrics.
#[actix_web::test]
async fn every_metric_the_rules_and_the_dashboard_read_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    crate::support::process::install_with_admin(&data, "root", &[]);
    let env = [
        ("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4"),
        ("FOUNTAIN_ROLES__NOTIFY__POLL_INTERVAL_MS", "50"),
        ("FOUNTAIN_ROLES__GATEWAY__HEALTH_CHECK_INTERVAL_MS", "200"),
    ];
    let roles: Vec<&str> = fountain::roles::ALL.iter().map(|r| r.name()).collect();
    let serve = ServeProcess::start(&data, &roles, &env);
    let subscriber = Subscriber::start();

    let (status, _) = blocking_call(
        serve.addr("kms"),
        "POST",
        "/login",
        None,
        Some(serde_json::json!({"username": "root", "password": "wrong-password"})),
    );
    assert_eq!(status, 401);
    let login = serde_json::json!({"username": "root", "password": PASSWORD});
    let (status, session) = blocking_call(serve.addr("kms"), "POST", "/login", None, Some(login));
    assert_eq!(status, 200);
    let admin = session["access_token"].as_str().unwrap().to_string();
    let (status, _) = blocking_call(serve.addr("gateway"), "GET", "/kms/users", Some("not-a-token"), None);
    assert_eq!(status, 401);
    let subscription = serde_json::json!({"topics": ["demo.*"], "callbackUrl": subscriber.url, "secret": "subscriber-secret-0123456789"});
    let (status, _) =
        blocking_call(serve.addr("notify"), "POST", "/subscriptions", Some(&admin), Some(subscription));
    assert_eq!(status, 201);
    let event = serde_json::json!({"topic": "demo.metrics", "payload": {}});
    let (status, _) = blocking_call(serve.addr("notify"), "POST", "/events", Some(&admin), Some(event));
    assert_eq!(status, 202);
    subscriber.wait_for("demo.metrics", 1).await;

    let queries = shipped_queries();
    let wanted: BTreeSet<String> = queries.iter().flat_map(|(_, expr)| metric_names(expr)).collect();
    let external: BTreeSet<&str> = EXTERNAL_METRICS.iter().map(|(name, _)| *name).collect();
    let exported = eventually(
        "every queried metric in some role's /metrics",
        std::time::Duration::from_secs(30),
        async || {
            let mut exported = BTreeSet::new();
            for role in &roles {
                let (status, _, body) = blocking_get(serve.addr(role), "/metrics", &[]);
                assert_eq!(status, 200);
                exported.extend(
                    body.lines()
                        .filter(|l| !l.starts_with('#') && !l.is_empty())
                        .map(|l| l.split(['{', ' ']).next().unwrap().to_string()),
                );
            }
            wanted
                .iter()
                .all(|name| external.contains(name.as_str()) || exported.contains(name))
                .then_some(exported)
        },
    )
    .await;
    for (place, expr) in &queries {
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name) || external.contains(name.as_str()),
                "{place} reads {name}, which no role exports"
            );
        }
    }
    // The external names are not fountain's: a fountain metric must not hide among them.
    for name in external {
        assert!(!exported.contains(name), "{name} is fountain's own; drop it from EXTERNAL_METRICS");
    }
}
