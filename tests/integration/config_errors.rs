//! Every configuration mistake an operator can make in the first hour ends the real binary with
//! one exact `error:` line, exit code 1, and nothing created on disk.

use std::path::PathBuf;
use std::process::Output;

use crate::support::fountain_command;

/// One run of the binary over a private data dir that must stay uncreated.
struct Run {
    output: Output,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    fn new(args: &[&str], env: &[(&str, &str)], files: &[(&str, &str)]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let data = dir.path().join("data");
        let mut command = fountain_command(&data);
        command.current_dir(dir.path()).args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        Run { output: command.output().expect("fountain runs"), data, _dir: dir }
    }

    /// Exit code 1, exactly `expected` as the one line on stderr, and no data dir.
    #[track_caller]
    fn fails_with(&self, expected: &str) {
        let stderr = String::from_utf8_lossy(&self.output.stderr);
        assert_eq!(stderr.trim_end(), expected);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert_eq!(self.output.status.code(), Some(1), "{stderr}");
        assert!(!self.data.exists(), "a failed start must not create {}", self.data.display());
    }
}

/// For both `config check` and `serve`: the same mistake, the same line.
#[track_caller]
fn both_commands_fail_with(env: &[(&str, &str)], files: &[(&str, &str)], expected: &str) {
    Run::new(&["config", "check"], env, files).fails_with(expected);
    Run::new(&["serve"], env, files).fails_with(expected);
}

#[test]
fn a_fountain_variable_with_a_single_underscore_is_named_instead_of_ignored() {
    both_commands_fail_with(
        &[("FOUNTAIN_SERVER_HOST", "0.0.0.0")],
        &[],
        "error: invalid configuration: environment variable FOUNTAIN_SERVER_HOST names no configuration \
         key (keys are FOUNTAIN_<SECTION>__<KEY>, with two underscores); did you mean FOUNTAIN_SERVER__HOST?",
    );
    both_commands_fail_with(
        &[("FOUNTAIN_VERBOSE", "1")],
        &[],
        "error: invalid configuration: environment variable FOUNTAIN_VERBOSE names no configuration key \
         (keys are FOUNTAIN_<SECTION>__<KEY>, with two underscores)",
    );
}

#[test]
fn fountains_own_variables_are_not_mistaken_for_keys() {
    let run = Run::new(
        &["config", "check"],
        &[("FOUNTAIN_ROLE", "kms"), ("FOUNTAIN_TEST_PG_URL", "postgres://postgres@127.0.0.1/x")],
        &[],
    );
    assert!(run.output.status.success(), "{}", String::from_utf8_lossy(&run.output.stderr));
}

#[test]
fn an_unknown_sectioned_variable_names_the_variable_and_the_known_keys() {
    both_commands_fail_with(
        &[("FOUNTAIN_SERVER__HOTS", "0.0.0.0")],
        &[],
        "error: invalid configuration: server.hots (from FOUNTAIN_SERVER__HOTS): unknown key `hots` \
         (known: host, workers, body_limit_bytes, body_read_timeout_seconds, shutdown_timeout_seconds, \
         trusted_proxies)",
    );
    both_commands_fail_with(
        &[("FOUNTAIN_LOG__FORMAT", "xml")],
        &[],
        "error: invalid configuration: log.format (from FOUNTAIN_LOG__FORMAT): unknown value `xml` \
         (expected one of: auto, json, text)",
    );
}

#[test]
fn a_toml_syntax_error_names_the_file_line_and_reason() {
    let run = Run::new(
        &["config", "check", "--config", "fountain.toml"],
        &[],
        &[("fountain.toml", "[server]\nworkers = 3\nhost = \n")],
    );
    run.fails_with(
        "error: invalid configuration: fountain.toml line 3, column 8: invalid string; expected `\"`, \
         `'`",
    );
}

#[test]
fn a_wrong_type_in_a_file_names_the_key_without_a_profile_prefix_and_the_file() {
    both_commands_fail_with(
        &[("FOUNTAIN_CONFIG", "fountain.toml")],
        &[("fountain.toml", "[server]\nworkers = \"many\"\n")],
        "error: invalid configuration: server.workers (in fountain.toml): invalid type: found string \
         \"many\", expected usize",
    );
}

#[test]
fn a_missing_config_file_names_its_path() {
    both_commands_fail_with(
        &[("FOUNTAIN_CONFIG", "/nonexistent/fountain.toml")],
        &[],
        "error: cannot read config file /nonexistent/fountain.toml: no such file",
    );
}

#[test]
fn two_roles_on_one_port_name_every_clashing_port_before_anything_is_created() {
    both_commands_fail_with(
        &[
            ("FOUNTAIN_ROLES__KMS__PORT", "9100"),
            ("FOUNTAIN_ROLES__NOTIFY__PORT", "9100"),
            ("FOUNTAIN_ROLES__SECRETS__PORT", "9101"),
            ("FOUNTAIN_ROLES__TWOFA__PORT", "9101"),
        ],
        &[],
        "error: invalid configuration: port 9100 is configured for kms, notify; port 9101 is configured \
         for secrets, twofa (set roles.<role>.port)",
    );
}

#[test]
fn ports_in_use_are_all_named_and_nothing_is_created() {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = (first.local_addr().unwrap().port(), second.local_addr().unwrap().port());
    let (a, b) = (a.to_string(), b.to_string());
    let run = Run::new(
        &["serve", "--role", "kms,secrets,notify"],
        &[
            ("FOUNTAIN_ROLES__KMS__PORT", a.as_str()),
            ("FOUNTAIN_ROLES__SECRETS__PORT", "0"),
            ("FOUNTAIN_ROLES__NOTIFY__PORT", b.as_str()),
        ],
        &[],
    );
    run.fails_with(&format!(
        "error: role kms cannot listen on 127.0.0.1:{a}: address already in use; role notify cannot \
         listen on 127.0.0.1:{b}: address already in use"
    ));
}

#[test]
fn a_route_to_an_unknown_service_is_named_unless_declared_as_registered() {
    both_commands_fail_with(
        &[("FOUNTAIN_ROLES__GATEWAY__ROUTES__BILLING", "sequnce")],
        &[],
        "error: invalid configuration: roles.gateway: routes.billing: no service \"sequnce\" (name a role, \
         give its address in [peers], or write { service = \"sequnce\", registered = true } for a service \
         found only in the registry)",
    );
    let checked = Run::new(
        &["config", "check", "--config", "f.toml"],
        &[],
        &[("f.toml", "[roles.gateway.routes]\nbilling = { service = \"billing\", registered = true }\n")],
    );
    assert!(checked.output.status.success(), "{}", String::from_utf8_lossy(&checked.output.stderr));
}
