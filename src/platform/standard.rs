//! The endpoints every role serves (the ecosystem contract): landing page, health, readiness,
//! metrics, the OpenAPI document and Swagger UI.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::openapi::{InfoBuilder, OpenApi as OpenApiDoc};
use utoipa::{OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::guards::TrustedProxies;
use super::role::Role;
use super::server::Hosted;
use super::time;

/// The header a proxy sets when it strips a path prefix before forwarding (the gateway's
/// `/{prefix}/…` routes).
const FORWARDED_PREFIX: &str = "x-forwarded-prefix";

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(OpenApi)]
#[openapi(
    paths(landing_page, health, ready, metrics, openapi_document),
    components(schemas(HealthStatus, ReadyStatus, ErrorBody)),
    tags(
        (name = "Landing", description = "Human entry page"),
        (name = "Health", description = "Liveness, readiness and metrics for operators"),
        (name = "Docs", description = "This API's machine-readable description")
    )
)]
struct StandardApi;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    #[schema(example = "healthy")]
    pub status: &'static str,
    /// When the answer was made: RFC 3339 in UTC with a `Z`.
    #[schema(example = "2026-11-30T11:36:26.123Z")]
    pub timestamp: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyStatus {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Each dependency checked and its state.
    #[schema(value_type = Object, example = json!({"database": "ok"}))]
    pub checks: serde_json::Value,
}

/// Declares the `bearer` (JWT) security scheme that protected operations refer to.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The complete OpenAPI 3.0.3 document of a role: standard endpoints plus the role's own.
pub fn role_openapi(role: &dyn Role) -> OpenApiDoc {
    let mut doc = StandardApi::openapi();
    doc.merge(role.openapi());
    doc.info = InfoBuilder::new()
        .title(format!("fountain {} ({})", role.name(), role.title()))
        .version(VERSION)
        .description(Some(role.description()))
        .build();
    doc.servers = Some(vec![utoipa::openapi::Server::new("/")]);
    super::documented_errors::document(&mut doc);
    doc
}

/// The path prefix a trusted proxy says it stripped (`X-Forwarded-Prefix: /kms`), when the
/// request comes from a `server.trusted_proxies` peer and the value is a plain path: one or
/// more `/segment`s of `[A-Za-z0-9_.-]`, no `.` or `..` segment. Anything else is ignored.
fn forwarded_prefix(req: &HttpRequest) -> Option<&str> {
    let trusted = req.app_data::<TrustedProxies>()?;
    let peer = req.peer_addr()?.ip();
    if !trusted.0.contains(&peer) {
        return None;
    }
    let prefix = req.headers().get(FORWARDED_PREFIX)?.to_str().ok()?;
    is_plain_prefix(prefix).then_some(prefix)
}

fn is_plain_prefix(prefix: &str) -> bool {
    let Some(rest) = prefix.strip_prefix('/') else { return false };
    rest.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    })
}

/// Registers the standard endpoints on a role's app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Resources (not bare routes) so that a wrong method gets 405, not 404.
    cfg.service(web::resource("/").get(landing_page))
        .service(web::resource("/health").get(health))
        .service(web::resource("/ready").get(ready))
        .service(web::resource("/metrics").get(metrics))
        .service(web::resource("/openapi.json").get(openapi_document))
        // Swagger UI uses relative asset paths: `/docs` must become `/docs/`. The target is
        // relative too, so it stays right behind the gateway's `/<service>/` prefix.
        .service(web::resource("/docs").get(|| async {
            HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "docs/")).finish()
        }))
        // In a scope, so that other paths (every proxied request, on the gateway) are not run
        // through the UI's catch-all pattern.
        .service(
            web::scope("/docs").service(
                SwaggerUi::new("/{_:.*}").config(utoipa_swagger_ui::Config::new(["../openapi.json"])),
            ),
        );
}

/// Display landing page
///
/// Shows the service name, version, a short description and links to the docs, health, readiness, metrics and OpenAPI document.
#[utoipa::path(
    get, path = "/", operation_id = "getLandingPage", tag = "Landing",
    responses((status = 200, description = "HTML landing page", content_type = "text/html"))
)]
async fn landing_page(hosted: web::Data<Hosted>) -> HttpResponse {
    let role = hosted.role;
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}
code{{background:#f3f3f3;padding:0 .3em}}</style></head>
<body>
<h1>{title}</h1>
<p>fountain <code>{name}</code> role, version {version}</p>
<p>{description}</p>
<ul>
<li><a href="./docs/">API documentation</a> (Swagger UI)</li>
<li><a href="./openapi.json">OpenAPI document</a></li>
<li><a href="./health">Health status</a></li>
<li><a href="./ready">Readiness</a> (database and dependencies)</li>
<li><a href="./metrics">Metrics</a> (Prometheus)</li>
</ul>
</body>
</html>"#,
        title = escape_html(role.title()),
        name = escape_html(role.name()),
        version = VERSION,
        description = escape_html(role.description()),
    );
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html)
}

/// Retrieve service health status
///
/// Liveness: answers 200 with {"status": "healthy", "timestamp": …} while the process serves requests.
#[utoipa::path(
    get, path = "/health", operation_id = "getHealthStatus", tag = "Health",
    responses((status = 200, description = "The service is alive", body = HealthStatus))
)]
async fn health() -> web::Json<HealthStatus> {
    web::Json(HealthStatus { status: "healthy", timestamp: time::now() })
}

/// Check readiness to serve
///
/// Readiness: checks the database and every dependency; 503 names the part that is unavailable.
#[utoipa::path(
    get, path = "/ready", operation_id = "getReadinessStatus", tag = "Health",
    responses(
        (status = 200, description = "Every dependency is available", body = ReadyStatus),
        (status = 503, description = "A dependency is unavailable", body = ErrorBody)
    )
)]
async fn ready(hosted: web::Data<Hosted>) -> ApiResult<web::Json<ReadyStatus>> {
    hosted.db.ping().await.map_err(|e| ApiError::unavailable("database", e))?;
    let mut checks = serde_json::Map::new();
    checks.insert("database".into(), "ok".into());
    for readiness in &hosted.readiness {
        (readiness.check)().await.map_err(|reason| ApiError::unavailable(readiness.name, reason))?;
        checks.insert(readiness.name.into(), "ok".into());
    }
    Ok(web::Json(ReadyStatus { status: "ready", checks: checks.into() }))
}

/// Export Prometheus metrics
///
/// Request counts and latency histograms by route template and status, plus this role's own counters.
#[utoipa::path(
    get, path = "/metrics", operation_id = "getMetrics", tag = "Health",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain"))
)]
async fn metrics(hosted: web::Data<Hosted>) -> ApiResult<HttpResponse> {
    let role = hosted.role.name();
    // Read per scrape (one indexed row): the head moves in every process that serves the role.
    // A database outage leaves the last value: it must not hide every other metric.
    if let Ok(Some(head)) = hosted.db.run(move |conn| super::audit::read_head(conn, role)).await {
        hosted.metrics.set_audit_chain_seq(head.seq);
    }
    let text = hosted.metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}

/// Get the OpenAPI document
///
/// This service's OpenAPI 3.0.3 description, the one Swagger UI at /docs renders; behind the gateway its server URL is the route prefix.
#[utoipa::path(
    get, path = "/openapi.json", operation_id = "getOpenApiDocument", tag = "Docs",
    responses((status = 200, description = "OpenAPI 3.0.3 document", content_type = "application/json"))
)]
async fn openapi_document(hosted: web::Data<Hosted>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let json = match forwarded_prefix(&req) {
        None => hosted.openapi_json.clone(),
        Some(prefix) => web::Bytes::from(with_server_url(&hosted.openapi_json, prefix)?),
    };
    Ok(HttpResponse::Ok().content_type("application/json").body(json))
}

/// The document with `servers: [{"url": url}]`, so that "Try it out" calls go through the
/// proxy's prefix.
fn with_server_url(document: &[u8], url: &str) -> ApiResult<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(document).map_err(ApiError::internal)?;
    value["servers"] = serde_json::json!([{ "url": url }]);
    serde_json::to_vec(&value).map_err(ApiError::internal)
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_are_prefixes() {
        for good in ["/kms", "/service_a", "/a/b-c/d.e", "/A9"] {
            assert!(is_plain_prefix(good), "{good}");
        }
        for bad in
            ["", "/", "kms", "/kms/", "//kms", "/k ms", "/../x", "/./x", "/kms?x", "https://evil", "/%2e"]
        {
            assert!(!is_plain_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html(r#"<a href="x">&"#), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
