//! Every role's OpenAPI document follows the ecosystem rules and is valid OpenAPI 3.0.3 for an
//! independent validator (Python's openapi-spec-validator).

use std::collections::HashSet;
use std::process::Command;

use fountain::roles;
use serde_json::Value;

use crate::support::{Backend, TestApp};

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn is_camel_case(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// The contract's rules: 3.0.3, unique camelCase operationIds, summaries and descriptions
/// present and at most 300 characters.
fn check_rules(role: &str, doc: &Value) {
    assert_eq!(doc["openapi"], "3.0.3", "{role}");
    let description = doc["info"]["description"].as_str().unwrap_or_default();
    assert!(!description.is_empty() && description.chars().count() <= 300, "{role} info.description");
    let mut ids = HashSet::new();
    let paths = doc["paths"].as_object().unwrap_or_else(|| panic!("{role} has no paths"));
    for (path, item) in paths {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{role} {method} {path}: no operationId"));
            assert!(is_camel_case(id), "{role} {method} {path}: operationId {id} is not camelCase");
            assert!(ids.insert(id.to_string()), "{role}: operationId {id} is not unique");
            for field in ["summary", "description"] {
                let text = op[field].as_str().unwrap_or_else(|| panic!("{role} {id}: no {field}"));
                assert!(!text.trim().is_empty(), "{role} {id}: empty {field}");
                assert!(text.chars().count() <= 300, "{role} {id}: {field} longer than 300 characters");
            }
        }
    }
    assert!(ids.contains("getHealthStatus"), "{role} lacks getHealthStatus");
}

fn validate_with_python(role: &str, doc: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{role}.json"));
    std::fs::write(&file, doc.to_string()).unwrap();
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.validation import OpenAPIV30SpecValidator\n\
             validate(json.load(open(sys.argv[1])), cls=OpenAPIV30SpecValidator)",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs (install openapi-spec-validator: see .ci/run)");
    assert!(
        output.status.success(),
        "{role}: openapi-spec-validator rejected the document: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[actix_web::test]
async fn every_served_spec_is_valid_openapi_3_0_3_with_the_contract_rules() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for role in roles::ALL {
        let (status, doc) = app.get_json(role.name(), "/openapi.json").await;
        assert_eq!(status, 200);
        check_rules(role.name(), &doc);
        validate_with_python(role.name(), &doc);
    }
    app.stop().await;
}

#[actix_web::test]
async fn the_cli_prints_the_same_spec_the_role_serves() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for role in roles::ALL {
        let output = Command::new(crate::support::fountain_bin())
            .args(["openapi", "--role", role.name()])
            .output()
            .unwrap();
        assert!(output.status.success());
        let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
        let (status, served) = app.get_json(role.name(), "/openapi.json").await;
        assert_eq!(status, 200);
        assert_eq!(printed, served, "{}", role.name());
    }
    app.stop().await;
}

#[test]
fn the_cli_prints_every_roles_spec_for_all_and_names_the_roles_for_an_unknown_one() {
    let output =
        Command::new(crate::support::fountain_bin()).args(["openapi", "--role", "all"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = printed.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = roles::names();
    expected.sort_unstable();
    assert_eq!(names, expected);
    for role in roles::ALL {
        check_rules(role.name(), &printed[role.name()]);
    }
    let output =
        Command::new(crate::support::fountain_bin()).args(["openapi", "--role", "kmz"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!("error: unknown role \"kmz\" (known: all, {})", roles::names().join(", "))
    );
}

#[test]
fn camel_case_rule_is_strict() {
    assert!(is_camel_case("getHealthStatus"));
    assert!(!is_camel_case("get_health"));
    assert!(!is_camel_case("GetHealth"));
    assert!(!is_camel_case("get-health"));
}
