//! The ecosystem contract every role serves: landing page, health, readiness, metrics, docs.

use fountain::roles;

use crate::on_both_backends;
use crate::support::{assert_error_shape, Backend, TestApp};

async fn every_role_serves_the_standard_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for role in roles::ALL {
        let (status, headers, body) = app.get(role.name(), "/").await;
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(status, 200, "{}", role.name());
        assert!(headers.get("content-type").unwrap().to_str().unwrap().starts_with("text/html"));
        assert!(html.contains(role.title()), "{} landing page lacks its title", role.name());
        assert!(html.contains(env!("CARGO_PKG_VERSION")), "{} landing page lacks the version", role.name());
        assert!(html.contains(role.description()), "{} landing page lacks the description", role.name());
        assert!(html.contains("href=\"./docs/\"") && html.contains("href=\"./health\""));

        let (status, health) = app.get_json(role.name(), "/health").await;
        assert_eq!((status, &health["status"]), (200, &serde_json::json!("healthy")));
        assert_health_timestamp(&health);

        let (status, ready) = app.get_json(role.name(), "/ready").await;
        assert_eq!(status, 200);
        assert_eq!(ready["checks"]["database"], "ok");

        let (status, headers, _) = app.get(role.name(), "/docs").await;
        assert_eq!(status, 308);
        assert_eq!(headers.get("location").unwrap(), "docs/");
        let (status, _, page) = app.get(role.name(), "/docs/").await;
        assert_eq!(status, 200);
        assert!(
            String::from_utf8_lossy(&page).contains("swagger-ui"),
            "Swagger UI is served from the binary"
        );
        let (status, _, script) = app.get(role.name(), "/docs/swagger-initializer.js").await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&script).contains("../openapi.json"));
        let (status, _, css) = app.get(role.name(), "/docs/swagger-ui.css").await;
        assert_eq!(status, 200);
        assert!(css.len() > 10_000, "the stylesheet is embedded, not fetched from a CDN");
    }
    app.stop().await;
}
on_both_backends!(every_role_serves_the_standard_endpoints);

/// `{"status": "healthy", "timestamp": "<RFC 3339 UTC with Z>"}` and nothing else.
#[track_caller]
fn assert_health_timestamp(health: &serde_json::Value) {
    let fields: Vec<&String> = health.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["status", "timestamp"], "{health}");
    let timestamp = health["timestamp"].as_str().unwrap();
    assert!(timestamp.ends_with('Z'), "{timestamp}");
    let parsed = chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339");
    assert_eq!(parsed.offset().local_minus_utc(), 0, "{timestamp}");
}

/// Swagger UI's "Try it out" calls the spec's server: behind the gateway (which strips the
/// route prefix and says so in `X-Forwarded-Prefix`) that is the prefix, otherwise `/`.
#[actix_web::test]
async fn the_served_spec_names_the_forwarded_prefix_as_its_server_only_from_a_trusted_proxy() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let servers = |prefix: Option<&'static str>, role: &'static str| {
        let mut request = app.client.get(app.url(role, "/openapi.json"));
        if let Some(prefix) = prefix {
            request = request.insert_header(("x-forwarded-prefix", prefix));
        }
        async move {
            let mut response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let doc: serde_json::Value = response.json().limit(8 << 20).await.unwrap();
            doc["servers"].clone()
        }
    };
    for role in roles::ALL {
        assert_eq!(servers(None, role.name()).await, serde_json::json!([{"url": "/"}]), "{}", role.name());
    }
    // The test client is on loopback, one of the default trusted proxies.
    assert_eq!(servers(Some("/kms"), "kms").await, serde_json::json!([{"url": "/kms"}]));
    assert_eq!(
        servers(Some("/api/v1.2/service_a"), "sequence").await,
        serde_json::json!([{"url": "/api/v1.2/service_a"}])
    );
    for bad in
        ["kms", "/", "/kms/", "//evil.example", "https://evil.example/x", "/a/../b", "/k%20s", "/kms?x=1"]
    {
        assert_eq!(
            servers(Some(bad), "kms").await,
            serde_json::json!([{"url": "/"}]),
            "{bad} is not a plain path"
        );
    }
    app.stop().await;

    let untrusting = TestApp::spawn_with(Backend::Sqlite, |c| c.server.trusted_proxies = vec![], None).await;
    let mut response = untrusting
        .client
        .get(untrusting.url("kms", "/openapi.json"))
        .insert_header(("x-forwarded-prefix", "/kms"))
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = response.json().limit(8 << 20).await.unwrap();
    assert_eq!(doc["servers"], serde_json::json!([{"url": "/"}]), "only a trusted proxy is believed");
    untrusting.stop().await;
}

/// Swagger UI loads the spec relative to the page, so `/{prefix}/docs/` behind the gateway
/// loads `/{prefix}/openapi.json`.
#[actix_web::test]
async fn swagger_ui_loads_the_spec_relative_to_where_it_is_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, _, script) = app.get("kms", "/docs/swagger-initializer.js").await;
    assert_eq!(status, 200);
    let script = String::from_utf8_lossy(&script);
    assert!(script.contains(r#""url": "../openapi.json""#), "{script}");
    assert!(!script.contains(r#""url": "/openapi.json""#), "{script}");
    let page = url::Url::parse("http://gateway.example/kms/docs/").unwrap();
    assert_eq!(page.join("../openapi.json").unwrap().path(), "/kms/openapi.json");
    app.stop().await;
}

#[actix_web::test]
async fn metrics_count_requests_by_role_route_template_and_status() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for _ in 0..3 {
        app.get("kms", "/health").await;
    }
    app.get("kms", "/no/such/thing/42").await;
    let (status, headers, body) = app.get("kms", "/metrics").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(status, 200);
    assert!(headers.get("content-type").unwrap().to_str().unwrap().starts_with("text/plain"));
    assert!(
        text.contains(r#"http_requests_total{method="GET",role="kms",route="/health",status="200"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "raw paths never become labels: {text}");
    assert!(!text.contains("/no/such/thing"), "{text}");
    assert!(text.contains(r#"http_request_duration_seconds_bucket{method="GET",role="kms",route="/health",status="200",le="0.001"}"#));
    assert!(text.contains(r#"fountain_build_info{role="kms""#));

    let (_, _, other) = app.get("gateway", "/metrics").await;
    let other = String::from_utf8(other.to_vec()).unwrap();
    assert!(!other.contains(r#"role="kms""#), "each role's /metrics shows that role alone: {other}");
    app.stop().await;
}

#[actix_web::test]
async fn request_ids_are_echoed_when_plain_and_generated_otherwise() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let send = |id: &'static str| {
        app.client.get(app.url("notify", "/health")).insert_header(("x-request-id", id)).send()
    };
    let response = send("trace-abc.123").await.unwrap();
    assert_eq!(response.headers().get("x-request-id").unwrap(), "trace-abc.123");

    let response = send("evil\" injected {json}").await.unwrap();
    let generated = response.headers().get("x-request-id").unwrap().to_str().unwrap();
    assert_ne!(generated, "evil\" injected {json}");
    assert_eq!(uuid::Uuid::parse_str(generated).map(|u| u.get_version_num()), Ok(4));

    let response = app.client.get(app.url("notify", "/health")).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    app.stop().await;
}

#[actix_web::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for role in roles::ALL {
        let (status, body) = app.get_json(role.name(), "/definitely-not-here").await;
        assert_eq!(status, 404);
        assert_eq!(assert_error_shape(&body), "not_found");

        let (status, body) = app.post_raw(role.name(), "/health", "application/json", b"{}".to_vec()).await;
        assert_eq!(status, 405, "{}", role.name());
        assert_eq!(assert_error_shape(&body), "method_not_allowed");
    }
    app.stop().await;
}

#[actix_web::test]
async fn readiness_fails_with_503_naming_the_database_when_it_goes_away() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (status, _) = app.get_json("secrets", "/ready").await;
    assert_eq!(status, 200);
    // Take the database away under the running server: readiness must say so, liveness not.
    let name = app.database.url.rsplit('/').next().unwrap().to_string();
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        let mut admin = diesel::PgConnection::establish(&crate::support::pg_admin_url()).unwrap();
        admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).unwrap();
    }
    let (status, body) = app.get_json("secrets", "/ready").await;
    assert_eq!(status, 503);
    assert_eq!(assert_error_shape(&body), "not_ready");
    assert_eq!(body["details"]["unavailable"], "database");
    let (status, _) = app.get_json("secrets", "/health").await;
    assert_eq!(status, 200);
    app.stop().await;
}
