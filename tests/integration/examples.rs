//! Every example in every role's served OpenAPI document works, so "Try it out" in Swagger UI
//! succeeds as documented: each operation whose request the document gives by example (a
//! request-body example or a schema example, path and query parameters from their examples) is
//! sent, with an admin token, to a fresh instance, and must answer its documented success
//! status. Where an example names something that must exist first (a service's secrets, a key,
//! a user), it is created first. Each example is also checked against its own schema with
//! Python's `openapi-schema-validator` (OpenAPI 3.0 rules, formats included).

use std::collections::BTreeMap;
use std::process::Command;

use fountain::roles;
use serde_json::{json, Value};

use crate::support::{Backend, TestApp, PASSWORD};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// One request an OpenAPI document describes completely by its examples.
#[derive(Debug, Clone)]
struct Example {
    role: &'static str,
    method: String,
    operation_id: String,
    /// Path parameter name -> example value.
    path_params: BTreeMap<String, String>,
    /// The path with its parameters filled in, and the query from the query examples.
    target: String,
    /// The request body's media type and example, if the operation has one.
    body: Option<(String, Value)>,
    /// The documented success status (the lowest 2xx).
    success: u16,
}

impl Example {
    fn name(&self) -> String {
        format!("{} {} {} ({})", self.role, self.method.to_uppercase(), self.target, self.operation_id)
    }
}

/// A schema or a parameter with `$ref`s followed to their target in `doc`.
fn resolve<'d>(doc: &'d Value, node: &'d Value) -> &'d Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(pointer) => resolve(doc, doc.pointer(pointer.trim_start_matches('#')).unwrap_or(&Value::Null)),
        None => node,
    }
}

/// A schema's own example, looking through a lone `allOf` (how utoipa writes `Option<T>`).
fn schema_example(doc: &Value, schema: &Value) -> Option<Value> {
    let schema = resolve(doc, schema);
    if let Some(example) = schema.get("example") {
        return Some(example.clone());
    }
    match schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        Some([only]) => schema_example(doc, only),
        _ => None,
    }
}

/// A parameter's example: its own, or its schema's.
fn parameter_example(doc: &Value, parameter: &Value) -> Option<String> {
    let example = parameter.get("example").cloned().or_else(|| schema_example(doc, &parameter["schema"]))?;
    Some(match example {
        Value::String(text) => text,
        other => other.to_string(),
    })
}

/// The media type and example of a request body (its media example, else its schema's).
fn body_example(doc: &Value, request_body: &Value) -> Option<(String, Value)> {
    let content = resolve(doc, request_body)["content"].as_object()?;
    content.iter().find_map(|(media_type, media)| {
        let example = media.get("example").cloned().or_else(|| schema_example(doc, &media["schema"]))?;
        Some((media_type.clone(), example))
    })
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Every operation of `doc` whose request its examples describe: a body example, or parameter
/// examples (every path parameter needs one).
fn examples_of(role: &'static str, doc: &Value) -> Vec<Example> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let parameters: Vec<&Value> = item["parameters"]
                .as_array()
                .into_iter()
                .chain(op["parameters"].as_array())
                .flatten()
                .map(|p| resolve(doc, p))
                .collect();
            let mut path_params = BTreeMap::new();
            let mut query = Vec::new();
            let mut complete = true;
            for parameter in &parameters {
                let name = parameter["name"].as_str().unwrap_or_default().to_string();
                let example = parameter_example(doc, parameter);
                match (parameter["in"].as_str(), example) {
                    (Some("path"), Some(value)) => drop(path_params.insert(name, value)),
                    (Some("path"), None) => complete = false,
                    (Some("query"), Some(value)) => query.push(format!("{name}={}", percent_encode(&value))),
                    _ => {}
                }
            }
            let body = op.get("requestBody").and_then(|b| body_example(doc, b));
            let body_required = op["requestBody"].is_object()
                && resolve(doc, &op["requestBody"])["required"].as_bool().unwrap_or(false);
            let has_examples = body.is_some() || !path_params.is_empty() || !query.is_empty();
            if !complete || !has_examples || (body_required && body.is_none()) {
                continue;
            }
            let mut target = path.clone();
            for (name, value) in &path_params {
                target = target.replace(&format!("{{{name}}}"), &percent_encode(value));
            }
            if !query.is_empty() {
                target = format!("{target}?{}", query.join("&"));
            }
            let success = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .filter_map(|status| status.parse::<u16>().ok())
                .filter(|status| (200..300).contains(status))
                .min()
                .unwrap_or_else(|| panic!("{role} {method} {path}: no documented success"));
            found.push(Example {
                role,
                method: method.to_string(),
                operation_id: op["operationId"].as_str().unwrap_or_default().to_string(),
                path_params,
                target,
                body,
                success,
            });
        }
    }
    found
}

/// Creates what `example` names and needs to exist first, from the example's own values.
async fn prepare(app: &TestApp, admin: &str, example: &Example) {
    let param = |name: &str| example.path_params.get(name).cloned().unwrap_or_default();
    let body = example.body.as_ref().map(|(_, body)| body.clone()).unwrap_or(Value::Null);
    let register = |username: String, password: String| async move {
        let user = json!({"username": username, "password": password});
        app.call("POST", "kms", "/register", Some(admin), Some(user)).await
    };
    match example.operation_id.as_str() {
        "getSecretsForService"
        | "listSecretVersions"
        | "rotateSecretsForService"
        | "replaceSecretsForService"
        | "deleteSecretsForService"
        | "destroySecretsForService" => {
            app.secrets().create(admin, &param("serviceName"), None).await.ok();
        }
        "restoreSecretsForService" => {
            app.secrets().create(admin, &param("serviceName"), None).await.ok();
            app.secrets().delete(admin, &param("serviceName")).await.ok();
        }
        "getApiKey" | "updateApiKey" | "rotateApiKey" | "deleteApiKey" => {
            app.kms().create_key(admin, &param("service_name")).await.ok();
        }
        "getUser" | "updateUser" | "deleteUser" => {
            register(param("username"), PASSWORD.to_string()).await;
        }
        "loginUser" => {
            let field = |name: &str| body[name].as_str().unwrap_or_default().to_string();
            register(field("username"), field("password")).await;
        }
        "getDocument" | "deleteDocument" => {
            let document = json!({
                "id": param("id"), "element_type": "action", "element_id": 42, "sequence_number": 7,
                "version_number": 1, "comment": "Margaret opens the door.", "service_name": "sequence"
            });
            app.search().sync(admin, "create", &document).await.ok();
        }
        "getElement" => {
            let id = param("elementId").parse().unwrap_or(1);
            app.sequence().create(admin, &param("elementType"), id, "an element to read").await.ok();
        }
        "reorderElements" | "createVersion" => {
            let element_type = body["elementType"].as_str().unwrap_or("script");
            let ids =
                body["elementIds"].as_array().cloned().unwrap_or_else(|| vec![body["elementId"].clone()]);
            for id in ids.iter().filter_map(Value::as_i64) {
                app.sequence().create(admin, element_type, id, "an element to change").await.ok();
            }
        }
        "issueToken" if body["grant_type"] == "client_credentials" => {
            let key = json!({"service_name": "example-client", "api_key": body["client_secret"]});
            app.call("POST", "kms", "/keys", Some(admin), Some(key)).await;
        }
        _ => {}
    }
}

/// Sends `example` to a fresh instance; returns why it failed, if it did.
async fn try_example(example: &Example) -> Option<String> {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin_token().await;
    prepare(&app, &admin, example).await;
    let method = awc::http::Method::from_bytes(example.method.to_uppercase().as_bytes()).unwrap();
    let request = app
        .client
        .request(method, app.url(example.role, &example.target))
        .insert_header(("authorization", format!("Bearer {admin}")));
    let sent = match &example.body {
        Some((media, body)) if media == "application/x-www-form-urlencoded" => request.send_form(body).await,
        Some((_, body)) => request.send_json(body).await,
        None => request.send().await,
    };
    let mut response = sent.expect("request sent");
    let status = response.status().as_u16();
    // A success body is not read: an event stream's would never end.
    let failure = if status == example.success {
        None
    } else {
        let body = response.body().limit(1 << 20).await.unwrap_or_default();
        Some(format!(
            "{}: sent {:?}, expected {}, got {status}: {}",
            example.name(),
            example.body.as_ref().map(|(_, b)| b),
            example.success,
            String::from_utf8_lossy(&body)
        ))
    };
    drop(response);
    app.stop().await;
    failure
}

/// Checks each `(schema, example, what)` with the OpenAPI 3.0 schema validator of Python's
/// `openapi-schema-validator` (formats included), `$ref`s resolved in `doc`.
fn validate_against_schemas(role: &str, doc: &Value, checks: &[(Value, Value, String)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{role}.json"));
    let checks: Vec<Value> = checks
        .iter()
        .map(|(schema, example, what)| json!({"schema": schema, "example": example, "what": what}))
        .collect();
    std::fs::write(&file, json!({"doc": doc, "checks": checks}).to_string()).unwrap();
    let script = r##"
import json, sys
from openapi_schema_validator import OAS30Validator, oas30_format_checker
data = json.load(open(sys.argv[1]))
doc = data["doc"]

def inline(node):
    if isinstance(node, dict):
        if "$ref" in node:
            target = doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return inline(target)
        return {k: inline(v) for k, v in node.items()}
    if isinstance(node, list):
        return [inline(v) for v in node]
    return node

for check in data["checks"]:
    validator = OAS30Validator(inline(check["schema"]), format_checker=oas30_format_checker)
    for error in validator.iter_errors(check["example"]):
        print(check["what"] + ": " + error.message)
"##;
    let output = Command::new("python3").args(["-c", script]).arg(&file).output().expect("python3 runs");
    assert!(output.status.success(), "{role}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

/// Every example in `doc` next to the schema it must satisfy: request bodies (media or schema
/// examples), parameters, and the examples of every component schema.
fn examples_with_schemas(doc: &Value) -> Vec<(Value, Value, String)> {
    let mut checks = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().into_iter().flatten() {
        if let Some(example) = schema.get("example") {
            checks.push((schema.clone(), example.clone(), format!("schema {name}")));
        }
        for (field, property) in schema["properties"].as_object().into_iter().flatten() {
            if let Some(example) = property.get("example") {
                checks.push((property.clone(), example.clone(), format!("schema {name}.{field}")));
            }
        }
    }
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().unwrap_or_default();
            for parameter in op["parameters"].as_array().into_iter().flatten() {
                let parameter = resolve(doc, parameter);
                if let Some(example) = parameter.get("example") {
                    let what = format!("{id} ({method} {path}) parameter {}", parameter["name"]);
                    checks.push((parameter["schema"].clone(), example.clone(), what));
                }
            }
            for (media_type, media) in
                resolve(doc, &op["requestBody"])["content"].as_object().into_iter().flatten()
            {
                if let Some(example) = media.get("example") {
                    let what = format!("{id} ({method} {path}) {media_type} request example");
                    checks.push((media["schema"].clone(), example.clone(), what));
                }
            }
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                for (media_type, media) in resolve(doc, response)["content"].as_object().into_iter().flatten()
                {
                    if let Some(example) = media.get("example") {
                        let what = format!("{id} ({method} {path}) {status} {media_type} example");
                        checks.push((media["schema"].clone(), example.clone(), what));
                    }
                }
            }
        }
    }
    checks
}

#[actix_web::test]
async fn every_example_request_in_every_spec_gets_its_documented_success() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut examples = Vec::new();
    for role in roles::ALL {
        let (status, doc) = app.get_json(role.name(), "/openapi.json").await;
        assert_eq!(status, 200);
        examples.extend(examples_of(role.name(), &doc));
    }
    app.stop().await;
    // The roles whose specs carry request examples are all exercised.
    for (role, operation) in [
        ("secrets", "generateSecret"),
        ("secrets", "publishNotification"),
        ("secrets", "replaceSecretsForService"),
        ("notify", "publishEvent"),
        ("notify", "createSubscription"),
    ] {
        assert!(
            examples.iter().any(|e| e.role == role && e.operation_id == operation),
            "{role} {operation} has no complete example"
        );
    }
    let mut failures = Vec::new();
    for example in &examples {
        if let Some(failure) = try_example(example).await {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} examples failed:\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n")
    );
}

#[actix_web::test]
async fn every_example_in_every_spec_satisfies_its_own_schema() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut problems = Vec::new();
    for role in roles::ALL {
        let (_, doc) = app.get_json(role.name(), "/openapi.json").await;
        let checks = examples_with_schemas(&doc);
        problems.extend(
            validate_against_schemas(role.name(), &doc, &checks)
                .into_iter()
                .map(|p| format!("{}: {p}", role.name())),
        );
    }
    app.stop().await;
    assert!(problems.is_empty(), "examples that break their own schema:\n{}", problems.join("\n"));
}

/// The bounds the handlers enforce are in the documents, so generated requests respect them.
#[actix_web::test]
async fn the_specs_state_the_bounds_the_handlers_enforce() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_, secrets) = app.get_json("secrets", "/openapi.json").await;
    let length = &secrets["components"]["schemas"]["GenerateRequest"]["properties"]["length"];
    assert_eq!(
        (length["minimum"].as_f64(), length["maximum"].as_f64()),
        (Some(16.0), Some(1024.0)),
        "{length}"
    );
    let (_, notify) = app.get_json("notify", "/openapi.json").await;
    let subscribe = &notify["components"]["schemas"]["SubscribeRequest"]["properties"];
    assert_eq!(
        (subscribe["topics"]["minItems"].as_u64(), subscribe["topics"]["maxItems"].as_u64()),
        (Some(1), Some(32))
    );
    assert_eq!(
        (subscribe["secret"]["minLength"].as_u64(), subscribe["secret"]["maxLength"].as_u64()),
        (Some(16), Some(256))
    );
    let limit = notify["paths"]["/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (limit["schema"]["minimum"].as_f64(), limit["schema"]["maximum"].as_f64()),
        (Some(1.0), Some(1000.0))
    );
    app.stop().await;
}
