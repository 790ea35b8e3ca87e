//! Bad input over real HTTP: every malformed body gets a clear 4xx JSON error. The routes here
//! are mounted through the host's extension point so they exercise exactly the extractor,
//! limits and middleware that every role's own endpoints use.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use fountain::platform::extract::Json;
use fountain::platform::server::ExtraRoutes;
use serde::{Deserialize, Serialize};

use crate::support::{assert_error_shape, Backend, TestApp};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Echo {
    name: String,
    count: u32,
    tags: Option<Vec<String>>,
}

fn probe_routes() -> ExtraRoutes {
    Arc::new(|cfg: &mut web::ServiceConfig| {
        cfg.route(
            "/probe/echo",
            web::post().to(|body: Json<Echo>| async move { web::Json(body.into_inner()) }),
        )
        .route(
            "/probe/slow",
            web::get().to(|| async {
                actix_web::rt::time::sleep(Duration::from_millis(800)).await;
                HttpResponse::Ok().body("finished")
            }),
        );
    })
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |_| {}, Some(probe_routes())).await
}

#[actix_web::test]
async fn a_valid_body_round_trips() {
    let app = spawn().await;
    let (status, body) = app
        .post_raw(
            "kms",
            "/probe/echo",
            "application/json",
            br#"{"name":"a","count":2,"tags":["x"]}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"name": "a", "count": 2, "tags": ["x"]}));
    app.stop().await;
}

#[actix_web::test]
async fn malformed_json_is_400_with_the_parser_reason() {
    let app = spawn().await;
    for raw in [
        &br#"{"name": "a", "count": 2"#[..],
        b"{name: 1}",
        b"",
        br#"{"name": "a" "count": 2}"#,
        br#"{"name":"a","count":1} {}"#,
    ] {
        let (status, body) = app.post_raw("kms", "/probe/echo", "application/json", raw.to_vec()).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(raw));
        assert_eq!(assert_error_shape(&body), "malformed_json");
        assert!(body["message"].as_str().unwrap().starts_with("malformed JSON: "), "{body}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn wrong_shapes_are_422_naming_the_field_without_echoing_values() {
    let app = spawn().await;
    let cases: [(&str, &str); 5] = [
        (r#"{"name":"a"}"#, "missing field `count`"),
        (r#"{"name":"a","count":"s3cret-value"}"#, "count"),
        (r#"{"name":"a","count":-1}"#, "count"),
        (r#"{"name":"a","count":1,"tags":["ok",{"s3cret-value":1}]}"#, "tags[1]"),
        (r#"{"name":"a","count":1,"admin":true}"#, "unknown field `admin`"),
    ];
    for (raw, expected) in cases {
        let (status, body) =
            app.post_raw("kms", "/probe/echo", "application/json", raw.as_bytes().to_vec()).await;
        assert_eq!(status, 422, "{raw}");
        assert_eq!(assert_error_shape(&body), "validation_failed");
        let text = body.to_string();
        assert!(text.contains(expected), "{raw} -> {text}");
        assert!(!text.contains("s3cret-value"), "submitted values must not be echoed: {text}");
    }
    let (status, body) = app.post_raw("kms", "/probe/echo", "application/json", b"[1,2]".to_vec()).await;
    assert_eq!((status, assert_error_shape(&body).as_str()), (422, "validation_failed"));
    app.stop().await;
}

#[actix_web::test]
async fn non_json_content_types_are_415() {
    let app = spawn().await;
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"] {
        let (status, body) =
            app.post_raw("kms", "/probe/echo", content_type, br#"{"name":"a","count":1}"#.to_vec()).await;
        assert_eq!(status, 415, "{content_type}");
        assert_eq!(assert_error_shape(&body), "unsupported_media_type");
    }
    let (status, _) = app
        .post_raw(
            "kms",
            "/probe/echo",
            "application/json; charset=utf-8",
            br#"{"name":"a","count":1}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "parameters on the JSON media type are fine");
    app.stop().await;
}

#[actix_web::test]
async fn bodies_over_the_limit_are_413_with_or_without_a_declared_length() {
    let app = spawn().await; // the test config limits bodies to 64 KiB
    let big = format!(r#"{{"name":"{}","count":1}}"#, "x".repeat(200 * 1024));
    let (status, body) =
        app.post_raw("kms", "/probe/echo", "application/json", big.clone().into_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(assert_error_shape(&body), "payload_too_large");
    assert_eq!(body["details"]["limitBytes"], 64 * 1024);

    // Chunked upload: no Content-Length, the limit must still hold while streaming.
    let chunks: Vec<Result<web::Bytes, std::io::Error>> =
        big.into_bytes().chunks(8192).map(|c| Ok(web::Bytes::copy_from_slice(c))).collect();
    let mut response = app
        .client
        .post(app.url("kms", "/probe/echo"))
        .insert_header(("content-type", "application/json"))
        .send_stream(futures_util::stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(assert_error_shape(&body), "payload_too_large");
    app.stop().await;
}

#[actix_web::test]
async fn graceful_stop_lets_in_flight_requests_finish() {
    let app = spawn().await;
    let url = app.url("sequence", "/probe/slow");
    let client = awc::Client::default();
    let in_flight = actix_web::rt::spawn(async move {
        let mut response = client.get(url).send().await.expect("in-flight request answered");
        (response.status().as_u16(), response.body().await.unwrap())
    });
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let addr = app.addr("sequence");
    app.stop().await;
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"finished"[..]));
    assert!(std::net::TcpStream::connect(addr).is_err(), "the listener is closed after stop");
}
