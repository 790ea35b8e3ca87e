//! The gateway as the seed's clients use it: an API key alone reaches fountain's roles, the
//! pages for people pass without a token under every prefix, `POST /search` on the gateway
//! itself, services reached under the name they registered, and key creation through the
//! gateway with a step-up token from twofa.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use fountain::config::Config;
use fountain::platform::role::Role;
use serde_json::{json, Value};

use crate::support::{eventually, Backend, TestApp, ANONYMOUS, PASSWORD};

/// An upstream named `name` that answers every request with what reached it: method, path,
/// query, headers and body.
fn start_recorder(name: &'static str) -> (String, actix_web::dev::ServerHandle) {
    crate::support::upstream::serve("127.0.0.1:0", move |cfg: &mut web::ServiceConfig| {
        cfg.default_service(web::to(move |req: HttpRequest, body: web::Bytes| async move {
            let headers: serde_json::Map<String, Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), Value::from(v.to_str().unwrap_or_default())))
                .collect();
            HttpResponse::Ok().json(json!({
                "upstream": name,
                "method": req.method().as_str(),
                "path": req.path(),
                "query": req.query_string(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            }))
        }));
    })
}

async fn spawn(adjust: impl FnOnce(&mut Config)) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, adjust, None).await
}

/// `method path` through the gateway with the given headers; the status and the JSON answer
/// (`null` when the body is not JSON).
async fn through_gateway(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, app.url("gateway", path));
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let mut response = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    }
    .unwrap();
    let bytes = response.body().limit(8 << 20).await.unwrap();
    (response.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// `GET path` through the gateway with nothing but an X-API-KEY.
async fn with_key(app: &TestApp, path: &str, key: &str) -> (u16, Value) {
    through_gateway(app, "GET", path, &[("x-api-key", key)], None).await
}

async fn exchanges(app: &TestApp, outcome: &str) -> u64 {
    let metrics = app.metrics("gateway").await;
    let line = format!("gateway_api_key_exchanges_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |n| n.parse().unwrap())
}

#[actix_web::test]
async fn an_api_key_reaches_fountain_roles_as_a_service_token_until_the_key_changes() {
    let app = spawn(|_| {}).await;
    let admin = app.admin_token().await;
    let key = app.kms().create_key(&admin, "svc").await.ok().api_key;
    app.secrets().create(&admin, "svc", json!({"PLAN": "gold"})).await.ok();
    app.secrets().create(&admin, "other", None).await.ok();

    // Eight first requests at once share one exchange; later ones use the cached token.
    let first =
        futures_util::future::join_all((0..8).map(|_| with_key(&app, "/secrets/secrets/svc", &key))).await;
    for (status, body) in &first {
        assert_eq!(
            (*status, &body["service_name"], &body["secrets"]["PLAN"]),
            (200, &json!("svc"), &json!("gold")),
            "{body}"
        );
    }
    let (status, _) = with_key(&app, "/secrets/secrets/svc", &key).await;
    assert_eq!((status, exchanges(&app, "issued").await), (200, 1));
    // The token is the service's own: another service's secrets stay closed to it.
    let (status, body) = with_key(&app, "/secrets/secrets/other", &key).await;
    assert_eq!((status, body["errorCode"].as_str()), (403, Some("forbidden")), "{body}");

    // Disabled: refused at once; enabled again: served again.
    app.kms().set_key_disabled(&admin, "svc", true).await.ok();
    let (status, body) = with_key(&app, "/secrets/secrets/svc", &key).await;
    assert_eq!((status, body["errorCode"].as_str()), (401, Some("unauthorized")), "{body}");
    app.kms().set_key_disabled(&admin, "svc", false).await.ok();
    assert_eq!(with_key(&app, "/secrets/secrets/svc", &key).await.0, 200);

    // Rotated: the new key and, during the grace, the old one both work.
    let rotated = app.kms().rotate_key(&admin, "svc", Some(600)).await.ok().api_key;
    assert_eq!(with_key(&app, "/secrets/secrets/svc", &rotated).await.0, 200);
    assert_eq!(with_key(&app, "/secrets/secrets/svc", &key).await.0, 200);

    // Revoked: no cached verdict or token outlives the key, for either of them.
    app.kms().revoke_key(&admin, "svc").await.ok();
    for revoked in [&key, &rotated] {
        let (status, body) = with_key(&app, "/secrets/secrets/svc", revoked).await;
        assert_eq!((status, body["errorCode"].as_str()), (401, Some("unauthorized")), "{body}");
    }
    assert_eq!(exchanges(&app, "refused").await, 0, "the verdicts refused them before any exchange");
    app.stop().await;
}

#[actix_web::test]
async fn a_key_kms_will_not_exchange_gets_the_same_401_as_a_bad_key() {
    let app = spawn(|c| c.set_role_setting("kms", "login_failures_per_address", 1)).await;
    let admin = app.admin_token().await;
    let key = app.kms().create_key(&admin, "svc").await.ok().api_key;
    // A client whose address kms throttles after a failed login (loopback plays the trusted
    // proxy, so kms believes the forwarded address): its key still verifies, but kms refuses
    // to issue it a token.
    let client = [("x-forwarded-for", "198.51.100.20")];
    let bad_login = json!({"username": "root", "password": format!("{PASSWORD}!")});
    let mut statuses = Vec::new();
    while statuses.last() != Some(&429) && statuses.len() < 5 {
        statuses.push(through_gateway(&app, "POST", "/kms/login", &client, Some(bad_login.clone())).await.0);
    }
    assert_eq!(statuses.last(), Some(&429), "kms throttles the address: {statuses:?}");
    let (status, refused) =
        through_gateway(&app, "GET", "/secrets/secrets/svc", &[client[0], ("x-api-key", &key)], None).await;
    let (_, bad_key) = with_key(&app, "/secrets/secrets/svc", "fk_forged").await;
    assert_eq!((status, &refused), (401, &bad_key));
    assert_eq!(exchanges(&app, "refused").await, 1);
    app.stop().await;
}

#[actix_web::test]
async fn forward_api_key_to_services_receive_the_key_itself_and_no_authorization() {
    let app = spawn(|c| {
        c.set_role_setting("gateway", "routes.legacy", json!({"service": "legacy", "registered": true}));
        c.set_role_setting("gateway", "routes.plain", json!({"service": "plain", "registered": true}));
        c.set_role_setting("gateway", "forward_api_key_to", ["legacy"]);
    })
    .await;
    let admin = app.admin_token().await;
    let key = app.kms().create_key(&admin, "svc").await.ok().api_key;
    let (legacy, legacy_handle) = start_recorder("legacy");
    let (plain, plain_handle) = start_recorder("plain");
    app.gateway().register_instance(&admin, "legacy", &legacy, 300).await.ok();
    app.gateway().register_instance(&admin, "plain", &plain, 300).await.ok();

    let (status, seen) = through_gateway(
        &app,
        "GET",
        "/legacy/report",
        &[("x-api-key", &key), ("authorization", "Basic c3ZjOnB3")],
        None,
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    let headers = &seen["headers"];
    assert_eq!(headers["x-api-key"].as_str(), Some(key.as_str()));
    assert_eq!(headers.get("authorization"), None);
    assert_eq!(
        (headers["x-fountain-user"].as_str(), headers["x-fountain-roles"].as_str()),
        (Some("svc"), Some("service"))
    );
    // Any other service gets neither the key nor a token for it.
    let (status, seen) = with_key(&app, "/plain/report", &key).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!((seen["headers"].get("x-api-key"), seen["headers"].get("authorization")), (None, None));
    assert_eq!(exchanges(&app, "issued").await, 0, "nobody needed a token");
    legacy_handle.stop(false).await;
    plain_handle.stop(false).await;
    app.stop().await;
}

#[actix_web::test]
async fn pages_for_people_pass_without_a_token_under_every_prefix() {
    let app = spawn(|c| {
        c.set_role_setting("gateway", "routes.echo", json!({"service": "echo", "registered": true}));
        c.set_role_setting(
            "gateway",
            "routes.whole",
            json!({"service": "echo", "strip_prefix": false, "registered": true}),
        );
    })
    .await;
    let admin = app.admin_token().await;

    let (status, headers, landing) = app.get("gateway", "/kms/").await;
    assert_eq!(status, 200);
    assert!(headers.get("content-type").unwrap().to_str().unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&landing).contains("Key Management Service"));
    let (status, headers, _) = app.get("gateway", "/secrets/docs").await;
    assert_eq!((status, headers.get("location").map(|l| l.to_str().unwrap())), (308, Some("docs/")));
    for page in ["/secrets/docs/", "/secrets/docs/swagger-ui.css", "/secrets/docs/swagger-initializer.js"] {
        assert_eq!(app.get("gateway", page).await.0, 200, "{page}");
    }
    let (status, spec) = app.get_json("gateway", "/notify/openapi.json").await;
    assert_eq!((status, spec["openapi"].as_str()), (200, Some("3.0.3")));

    // Pages only: reading anything else, or writing to a page's path, still needs a credential.
    for (method, path) in
        [("GET", "/kms/users"), ("POST", "/kms/openapi.json"), ("DELETE", "/kms/docs/"), ("GET", "/search/")]
    {
        let (status, body) = through_gateway(&app, method, path, &[], None).await;
        assert_eq!((status, body["errorCode"].as_str()), (401, Some("unauthorized")), "{method} {path}");
    }

    // The stripped prefix travels as X-Forwarded-Prefix, whatever the client claimed.
    let (recorder, handle) = start_recorder("echo");
    app.gateway().register_instance(&admin, "echo", &recorder, 300).await.ok();
    let bearer = format!("Bearer {admin}");
    let spoofed = [("authorization", bearer.as_str()), ("x-forwarded-prefix", "/evil")];
    let (status, seen) = through_gateway(&app, "GET", "/echo/things", &spoofed, None).await;
    assert_eq!((status, seen["path"].as_str()), (200, Some("/things")), "{seen}");
    assert_eq!(seen["headers"]["x-forwarded-prefix"].as_str(), Some("/echo"));
    let (status, seen) = through_gateway(&app, "GET", "/whole/things", &spoofed, None).await;
    assert_eq!((status, seen["path"].as_str()), (200, Some("/whole/things")), "{seen}");
    assert_eq!(seen["headers"].get("x-forwarded-prefix"), None, "nothing was stripped");
    handle.stop(false).await;

    // The gateway's own document offers X-API-KEY beside bearer tokens.
    let (_, own) = app.get_json("gateway", "/openapi.json").await;
    let schemes = &own["components"]["securitySchemes"];
    assert_eq!(schemes["apiKey"]["type"], "apiKey");
    assert_eq!(
        (schemes["apiKey"]["in"].as_str(), schemes["apiKey"]["name"].as_str()),
        (Some("header"), Some("X-API-KEY"))
    );
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    app.stop().await;
}

#[actix_web::test]
async fn a_spec_fetched_through_the_gateway_names_its_prefix_as_the_server() {
    let app = spawn(|_| {}).await;
    for prefix in ["kms", "secrets"] {
        let (status, spec) = app.get_json("gateway", &format!("/{prefix}/openapi.json")).await;
        assert_eq!(status, 200);
        assert_eq!(
            spec["servers"][0]["url"].as_str(),
            Some(format!("/{prefix}").as_str()),
            "{prefix}: {}",
            spec["servers"]
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn post_search_on_the_gateway_reaches_the_search_service_with_its_path() {
    // The search service is a recorder here: every role but search runs, and [peers] points
    // the default `search` route at the recorder.
    let (recorder, handle) = start_recorder("search");
    let selected: Vec<&'static dyn Role> =
        fountain::roles::ALL.iter().copied().filter(|role| role.name() != "search").collect();
    let app = TestApp::spawn_roles(
        Backend::Sqlite,
        &selected,
        |c| {
            c.peers.insert("search".into(), recorder.clone());
        },
        None,
    )
    .await;
    let admin = app.admin_token().await;
    let bearer = format!("Bearer {admin}");
    let query =
        json!({"q": "script", "query_by": "element_type", "sort_by": "sequence_number:asc", "max_hits": 10});

    let (status, seen) =
        through_gateway(&app, "POST", "/search", &[("authorization", &bearer)], Some(query.clone())).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(
        (seen["upstream"].as_str(), seen["method"].as_str(), seen["path"].as_str()),
        (Some("search"), Some("POST"), Some("/search"))
    );
    assert_eq!(serde_json::from_str::<Value>(seen["body"].as_str().unwrap()).unwrap(), query);
    assert_eq!(seen["headers"].get("x-forwarded-prefix"), None);
    // The seed's Typesense-client prefix is still stripped.
    let (status, seen) = through_gateway(
        &app,
        "GET",
        "/typesense_client/collections?x=1",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(
        (status, seen["path"].as_str(), seen["query"].as_str()),
        (200, Some("/collections"), Some("x=1"))
    );
    assert_eq!(seen["headers"]["x-forwarded-prefix"].as_str(), Some("/typesense_client"));
    handle.stop(false).await;
    app.stop().await;
}

#[actix_web::test]
async fn registered_services_are_reached_under_their_own_name_unless_a_route_says_otherwise() {
    let app = spawn(|c| {
        c.set_role_setting("gateway", "routes.reports", json!({"service": "reporting", "registered": true}))
    })
    .await;
    let admin = app.admin_token().await;
    let bearer = format!("Bearer {admin}");
    let (billing, billing_handle) = start_recorder("billing");
    let (reporting, reporting_handle) = start_recorder("reporting");
    let gateway = app.gateway();
    assert_eq!(gateway.get(&admin, "/billing/invoices").await.refusal(), (404, "not_found"));
    gateway.register_instance(&admin, "billing", &billing, 300).await.ok();
    gateway.register_instance(&admin, "reporting", &reporting, 300).await.ok();
    gateway.register_instance(&admin, "reports", &billing, 300).await.ok();

    let (status, seen) =
        through_gateway(&app, "GET", "/billing/invoices?page=2", &[("authorization", &bearer)], None).await;
    assert_eq!(
        (status, seen["upstream"].as_str(), seen["path"].as_str()),
        (200, Some("billing"), Some("/invoices")),
        "{seen}"
    );
    assert_eq!(
        (seen["query"].as_str(), seen["headers"]["x-forwarded-prefix"].as_str()),
        (Some("page=2"), Some("/billing"))
    );
    assert_eq!(seen["headers"].get("authorization"), None, "billing is not one of fountain's roles");
    // A configured prefix wins over a registered name.
    let (status, seen) =
        through_gateway(&app, "GET", "/reports/q3", &[("authorization", &bearer)], None).await;
    assert_eq!((status, seen["upstream"].as_str()), (200, Some("reporting")));
    // Unknown names and anonymous callers are refused as before.
    assert_eq!(gateway.get(&admin, "/nobody/x").await.refusal(), (404, "not_found"));
    assert_eq!(gateway.get(ANONYMOUS, "/billing/invoices").await.refusal(), (401, "unauthorized"));
    let metrics = app.metrics("gateway").await;
    assert!(metrics.contains(r#"route="/billing/*",status="200""#), "requests are labelled by prefix");
    app.stop().await;

    let closed = spawn(|c| c.set_role_setting("gateway", "route_registered_services", false)).await;
    let admin = closed.admin_token().await;
    closed.gateway().register_instance(&admin, "billing", &billing, 300).await.ok();
    assert_eq!(closed.gateway().get(&admin, "/billing/invoices").await.refusal(), (404, "not_found"));
    closed.stop().await;
    billing_handle.stop(false).await;
    reporting_handle.stop(false).await;
}

#[actix_web::test]
async fn an_admin_steps_up_with_twofa_then_creates_keys_and_secrets_through_the_gateway() {
    let app = spawn(|_| {}).await;
    app.create_admin();
    let gateway = app.gateway();
    let admin = gateway.kms().login("root").await.access_token;
    assert_eq!(gateway.kms().create_key(&admin, "svc").await.refusal(), (403, "mfa_required"));
    let enrollment = gateway.twofa().enroll(&admin, None).await.ok();
    gateway.twofa().activate(&admin, &crate::twofa::pyotp_code(&enrollment.secret, 0)).await.ok();
    // The next step's code: the activation used this one.
    let next = crate::twofa::pyotp_code(&enrollment.secret, 1);
    let step_up = gateway.twofa().verify(&admin, &next).await.ok().access_token;
    let created = gateway.kms().create_key(&step_up, "svc").await.ok();
    assert_eq!(app.kms().verify_key(&created.api_key).await.service_name.as_deref(), Some("svc"));
    assert_eq!(gateway.secrets().create(&step_up, "svc", None).await.ok().version, 1);
    app.stop().await;
}

#[actix_web::test]
async fn the_gateway_never_routes_to_itself_under_its_registered_name() {
    // Every role registers itself here, the gateway included.
    let app = TestApp::spawn_with_injection(Backend::Sqlite, |_| {}).await;
    let admin = app.admin_token().await;
    eventually("the gateway to register itself", Duration::from_secs(10), async || {
        let registry = app.gateway().registry(&admin).await.ok();
        registry.entries.iter().any(|e| e.service == "gateway" && !e.is_static).then_some(())
    })
    .await;
    // Otherwise /gateway/gateway/… would go round the gateway once per segment.
    assert_eq!(app.gateway().get(&admin, "/gateway/gateway/registry").await.refusal(), (404, "not_found"));
    app.stop().await;
}
