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
        assert_eq!((status, health), (200, serde_json::json!({"status": "healthy"})));

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
