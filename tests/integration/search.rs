//! The search role beyond the conformance suite: who may call what, every kind of bad input,
//! an unreachable Typesense, concurrent syncs, and kill -9 of the real binary mid-sync.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::search_conformance::{doc, load_fixtures, Engine, SearchSetup};
use crate::support::{assert_error_shape, blocking_call, eventually, ServeProcess, ANONYMOUS, PASSWORD};

#[actix_web::test]
async fn users_search_and_read_while_only_services_and_admins_write() {
    let setup = SearchSetup::start(Engine::Embedded).await;
    let app = &setup.app;
    app.kms().register(ANONYMOUS, "reader", &[]).await.ok();
    let user = app.kms().login("reader").await.access_token;
    let search = app.search();
    let document = doc(1, "action", 1, "A door");
    assert_eq!(search.sync(&user, "create", &document).await.refusal(), (403, "forbidden"));
    assert_eq!(search.sync(ANONYMOUS, "create", &document).await.refusal(), (401, "unauthorized"));
    assert_eq!(search.import(&user, &format!("{document}\n")).await.0, 403);
    search.sync(&setup.admin, "create", &document).await.ok();
    assert_eq!(search.delete(&user, "d1").await.refusal(), (403, "forbidden"));
    assert_eq!(search.search(&user, json!({"q": "door", "query_by": "comment"})).await.ok().found, 1);
    assert_eq!(search.get(&user, "d1").await.ok().comment, "A door");
    assert_eq!(search.collection(&user, "elements").await.ok()["num_documents"], 1);
    assert_eq!(search.search(ANONYMOUS, json!({"q": "door", "query_by": "comment"})).await.refusal().0, 401);
    setup.app.stop().await;
}

/// (what, body, status, errorCode, the field the error names)
fn bad_syncs() -> Vec<(&'static str, Value, u16, &'static str, &'static str)> {
    let good = doc(1, "action", 1, "A door");
    let with = |field: &str, value: Value| {
        let mut d = good.clone();
        d[field] = value;
        json!({"operation": "create", "document": d})
    };
    let without = |field: &str| {
        let mut d = good.clone();
        d.as_object_mut().unwrap().remove(field);
        json!({"operation": "create", "document": d})
    };
    vec![
        (
            "unknown operation",
            json!({"operation": "upsert", "document": good}),
            400,
            "bad_request",
            "operation",
        ),
        (
            "operation not a string",
            json!({"operation": 1, "document": good}),
            422,
            "validation_failed",
            "operation",
        ),
        ("no document", json!({"operation": "create"}), 422, "validation_failed", ""),
        (
            "unknown top-level field",
            json!({"operation": "create", "document": good, "x": 1}),
            422,
            "validation_failed",
            "",
        ),
        ("missing id", without("id"), 422, "validation_failed", ""),
        ("missing comment", without("comment"), 422, "validation_failed", ""),
        ("unknown document field", with("color", json!("red")), 422, "validation_failed", ""),
        ("id with a slash", with("id", json!("a/b")), 422, "validation_failed", "document.id"),
        ("empty id", with("id", json!("")), 422, "validation_failed", "document.id"),
        ("id too long", with("id", json!("x".repeat(129))), 422, "validation_failed", "document.id"),
        ("id a number", with("id", json!(5)), 422, "validation_failed", "document.id"),
        (
            "element_id a string",
            with("element_id", json!("5")),
            422,
            "validation_failed",
            "document.element_id",
        ),
        (
            "element_id beyond int32",
            with("element_id", json!(2147483648i64)),
            422,
            "validation_failed",
            "document.element_id",
        ),
        (
            "sequence_number a float",
            with("sequence_number", json!(1.5)),
            422,
            "validation_failed",
            "document.sequence_number",
        ),
        (
            "version_number null",
            with("version_number", Value::Null),
            422,
            "validation_failed",
            "document.version_number",
        ),
        (
            "empty element_type",
            with("element_type", json!("")),
            422,
            "validation_failed",
            "document.element_type",
        ),
        (
            "element_type too long",
            with("element_type", json!("a".repeat(65))),
            422,
            "validation_failed",
            "document.element_type",
        ),
        (
            "service_name with a control character",
            with("service_name", json!("a\u{1}b")),
            422,
            "validation_failed",
            "document.service_name",
        ),
        (
            "comment too long",
            with("comment", json!("a".repeat(16 * 1024 + 1))),
            422,
            "validation_failed",
            "document.comment",
        ),
        ("comment not a string", with("comment", json!(["a"])), 422, "validation_failed", "document.comment"),
    ]
}

/// (what, body, status, the parameter named, the position named)
fn bad_searches() -> Vec<(&'static str, Value, u16, &'static str, Option<u64>)> {
    let s = |extra: Value| {
        let mut body = json!({"q": "door", "query_by": "comment"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    vec![
        ("max_hits 0", s(json!({"max_hits": 0})), 422, "max_hits", None),
        ("max_hits 251", s(json!({"max_hits": 251})), 422, "max_hits", None),
        ("max_hits negative", s(json!({"max_hits": -1})), 422, "max_hits", None),
        ("max_hits a string", s(json!({"max_hits": "10"})), 422, "max_hits", None),
        ("page 0", s(json!({"page": 0})), 422, "page", None),
        ("page too far", s(json!({"page": 10001})), 422, "page", None),
        ("q not a string", json!({"q": 1, "query_by": "comment"}), 422, "q", None),
        ("q too long", s(json!({"q": "a".repeat(4097)})), 422, "q", None),
        ("no query_by", json!({"q": "door"}), 422, "", None),
        ("unknown parameter", s(json!({"per_page": 10})), 422, "", None),
        ("query_by unknown field", s(json!({"query_by": "comment,plot"})), 400, "query_by", Some(8)),
        ("query_by number field", s(json!({"query_by": "element_id"})), 400, "query_by", Some(0)),
        (
            "filter unknown field",
            s(json!({"filter_by": "element_id:1 && plot:x"})),
            400,
            "filter_by",
            Some(16),
        ),
        ("filter wrong type", s(json!({"filter_by": "sequence_number:>ten"})), 400, "filter_by", Some(17)),
        ("filter unclosed parenthesis", s(json!({"filter_by": "(element_id:1"})), 400, "filter_by", Some(13)),
        ("filter dangling operator", s(json!({"filter_by": "element_id:1 ||"})), 400, "filter_by", Some(15)),
        ("filter without colon", s(json!({"filter_by": "element_id=1"})), 400, "filter_by", Some(10)),
        ("filter unclosed list", s(json!({"filter_by": "element_id:[1,2"})), 400, "filter_by", Some(15)),
        ("filter range on a string", s(json!({"filter_by": "comment:[a..b]"})), 400, "filter_by", Some(9)),
        ("filter comparison on a string", s(json!({"filter_by": "comment:>a"})), 400, "filter_by", Some(0)),
        (
            "sort four fields",
            s(json!({"sort_by": "element_id:asc,sequence_number:asc,version_number:asc,_text_match:desc"})),
            400,
            "sort_by",
            Some(54),
        ),
        ("sort unknown field", s(json!({"sort_by": "plot:asc"})), 400, "sort_by", Some(0)),
        (
            "sort string field",
            s(json!({"sort_by": "element_id:asc, comment:desc"})),
            400,
            "sort_by",
            Some(16),
        ),
        ("sort bad direction", s(json!({"sort_by": "element_id:up"})), 400, "sort_by", Some(0)),
        ("facet on a non-facet field", s(json!({"facet_by": "comment"})), 400, "facet_by", Some(0)),
    ]
}

async fn bad_input_gets_clear_errors(engine: Engine) {
    let setup = SearchSetup::start(engine).await;
    let app = &setup.app;
    for (what, body, status, code, field) in bad_syncs() {
        let (got, answer) =
            app.call("POST", "search", "/documents/sync", Some(&setup.service), Some(body)).await;
        assert_eq!((got, assert_error_shape(&answer).as_str()), (status, code), "{what}: {answer}");
        if !field.is_empty() {
            assert_eq!(answer["details"]["field"], field, "{what}: {answer}");
        }
        assert!(!answer.to_string().contains("aaaaaaaa"), "{what}: no value echoed");
    }
    let mut response = app
        .client
        .post(app.url("search", "/documents/sync"))
        .insert_header(("authorization", format!("Bearer {}", setup.service)))
        .insert_header(("content-type", "application/json"))
        .send_body("{\"operation\": ")
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&response.body().await.unwrap()).unwrap();
    assert_eq!((response.status().as_u16(), assert_error_shape(&answer).as_str()), (400, "malformed_json"));
    load_fixtures(&setup).await;
    for (what, body, status, parameter, position) in bad_searches() {
        let (got, answer) = app.call("POST", "search", "/search", Some(&setup.admin), Some(body)).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_error_shape(&answer);
        if !parameter.is_empty() {
            assert_eq!(answer["details"]["field"], parameter, "{what}: {answer}");
        }
        if let Some(position) = position {
            assert_eq!(answer["details"]["position"], position, "{what}: {answer}");
            assert!(
                answer["message"].as_str().unwrap().contains(&format!("at position {position}")),
                "{answer}"
            );
        }
    }

    // Import: a result per line, the bad lines named, the good ones applied.
    let good = doc(30, "action", 30, "A lantern swings");
    let lines =
        format!("{good}\n{{\"id\": \"x\"}}\nnot json\n\n{}\n", doc(31, "action", 31, "A lantern falls"));
    let (status, results) = app.search().import(&setup.service, &lines).await;
    assert_eq!(status, 200);
    assert_eq!(results.len(), 4, "one result per non-blank line: {results:?}");
    assert_eq!(results[0], json!({"success": true}));
    assert_eq!(results[1]["success"], false);
    assert_eq!(results[1]["document"], "{\"id\": \"x\"}");
    assert!(results[1]["error"].as_str().unwrap().contains("missing field"), "{results:?}");
    assert_eq!(results[2]["success"], false);
    assert_eq!(results[3], json!({"success": true}));
    let found = app.search().search(&setup.admin, json!({"q": "lantern", "query_by": "comment"})).await.ok();
    assert_eq!(found.found, 2);
    let (status, answer) = app.search().import(&setup.service, "\n\n").await;
    assert_eq!((status, answer[0]["errorCode"].as_str()), (400, Some("bad_request")));
    let (status, answer) = app
        .call("POST", "search", "/documents/import?action=create", Some(&setup.service), Some(good.clone()))
        .await;
    assert_eq!((status, answer["details"]["field"].as_str()), (400, Some("action")));

    assert_eq!(app.search().get(&setup.admin, "nope").await.refusal(), (404, "not_found"));
    assert_eq!(app.search().get(&setup.admin, "bad%20id").await.refusal(), (404, "not_found"));
    setup.app.stop().await;
}

#[actix_web::test]
async fn bad_input_gets_clear_errors_on_the_embedded_engine() {
    bad_input_gets_clear_errors(Engine::Embedded).await
}

#[actix_web::test]
async fn bad_input_gets_clear_errors_on_typesense() {
    bad_input_gets_clear_errors(Engine::Typesense).await
}

#[actix_web::test]
async fn typesense_down_is_503_with_retry_after_and_recovers_nothing_lost() {
    let mut setup = SearchSetup::start(Engine::Typesense).await;
    let search = setup.app.search();
    search.sync(&setup.service, "create", &doc(1, "action", 1, "A door")).await.ok();
    setup.typesense.as_mut().unwrap().stop();

    let window = doc(2, "action", 2, "A window");
    let answer = search.sync(&setup.service, "create", &window).await;
    assert_eq!(answer.refusal(), (503, "not_ready"));
    let url = setup.app.url("search", "/documents/sync");
    let response = setup
        .app
        .client
        .post(url)
        .insert_header(("authorization", format!("Bearer {}", setup.service)))
        .send_json(&json!({"operation": "create", "document": window}))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers().get("retry-after").unwrap(), "1");
    let answer = search.search(&setup.admin, json!({"q": "door", "query_by": "comment"})).await;
    assert_eq!(answer.refusal(), (503, "not_ready"));
    let (status, _) = setup.app.get_json("search", "/ready").await;
    assert_eq!(status, 503, "readiness names the backend");

    // Typesense comes back on the same data directory, key and port: the refused sync is
    // retried as a caller told to retry would, and what was acknowledged before is still there.
    setup.typesense.as_mut().unwrap().restart();
    eventually("a sync to succeed once Typesense is back", Duration::from_secs(30), async || {
        (search.sync(&setup.service, "create", &window).await.status == 200).then_some(())
    })
    .await;
    let (status, _) = setup.app.get_json("search", "/ready").await;
    assert_eq!(status, 200);
    let user = &setup.admin;
    let found = search.search(user, json!({"q": "door", "query_by": "comment"})).await.ok();
    assert_eq!(
        found.hits.iter().map(|h| h.document.id.as_str()).collect::<Vec<_>>(),
        ["d1"],
        "acknowledged before"
    );
    let found = search.search(user, json!({"q": "window", "query_by": "comment"})).await.ok();
    assert_eq!(found.hits.iter().map(|h| h.document.id.as_str()).collect::<Vec<_>>(), ["d2"], "synced after");
    assert_eq!(search.get(user, "d1").await.ok().comment, "A door");
    assert_eq!(search.collection(user, "elements").await.ok()["num_documents"], 2);
    setup.app.stop().await;
}

/// The value of an unlabelled counter in a Prometheus text page.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics: {metrics}"))
}

#[actix_web::test]
async fn metrics_count_commits_and_the_changes_they_carry() {
    let setup = SearchSetup::start(Engine::Embedded).await;
    let search = setup.app.search();
    let read = async || {
        let metrics = setup.app.metrics("search").await;
        (counter(&metrics, "search_commits_total"), counter(&metrics, "search_synced_changes_total"))
    };
    let (commits, changes) = read().await;
    // A sync waits for its commit: three in a row are three commits of one change each.
    for n in 1..=3 {
        search.sync(&setup.service, "create", &doc(n, "action", n, "A door")).await.ok();
    }
    assert_eq!(read().await, (commits + 3, changes + 3));
    // One import is one commit, whatever its size; a refused line is no change.
    let mut lines: String = (10..30).map(|n| format!("{}\n", doc(n, "action", n, "A hall"))).collect();
    lines.push_str("{\"id\": 5}\n");
    let (status, results) = search.import(&setup.service, &lines).await;
    assert_eq!((status, results.len()), (200, 21));
    assert_eq!(read().await, (commits + 4, changes + 23));
    // A delete is a change too.
    search.sync(&setup.service, "delete", &doc(1, "action", 1, "A door")).await.ok();
    assert_eq!(read().await, (commits + 5, changes + 24));
    setup.app.stop().await;
}

#[actix_web::test]
async fn concurrent_syncs_are_each_searchable_when_they_answer() {
    let setup = SearchSetup::start(Engine::Embedded).await;
    let calls = (0..64).map(|n| {
        let setup = &setup;
        async move {
            let document = doc(100 + n, "action", 100 + n, &format!("Marker{n} crosses the stage"));
            setup.app.search().sync(&setup.service, "create", &document).await.ok();
            // Read-your-writes: the answer means the change is searchable now.
            let filter = format!("element_id:={}", 100 + n);
            let found = setup
                .app
                .search()
                .search(&setup.admin, json!({"q": "crosses", "query_by": "comment", "filter_by": filter}))
                .await
                .ok();
            assert_eq!(found.found, 1, "document {n}");
        }
    });
    futures_util::future::join_all(calls).await;
    let info = setup.app.search().collection(&setup.admin, "elements").await.ok();
    assert_eq!(info["num_documents"], 64);
    setup.app.stop().await;
}

fn login(process: &ServeProcess) -> String {
    let (status, answer) = blocking_call(
        process.addr("kms"),
        "POST",
        "/login",
        None,
        Some(json!({"username": "ops", "password": PASSWORD})),
    );
    assert_eq!(status, 200, "{answer}");
    answer["access_token"].as_str().unwrap().to_string()
}

#[test]
fn kill_9_mid_sync_loses_no_acknowledged_document_and_the_index_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    crate::support::process::install_with_admin(&data, "ops", &[]);
    // Quiet logs: nobody reads the child's stdout after start, and a full pipe would stall it.
    let quiet = [("FOUNTAIN_LOG__LEVEL", "info,actix_server=warn,tantivy=warn,fountain::access=warn")];
    let process = ServeProcess::start(&data, &["kms", "search"], &quiet);
    let token = login(&process);
    let addr = process.addr("search");

    // Eight writers sync until the process dies; every 200 is recorded.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (acknowledged, dead, token) = (acknowledged.clone(), dead.clone(), token.clone());
            std::thread::spawn(move || {
                for n in 0.. {
                    if dead.load(Ordering::SeqCst) {
                        return;
                    }
                    let id = w * 100_000 + n;
                    let body = json!({"operation": "create", "document": doc(id, "action", id, "Survivor")});
                    let attempt = std::panic::catch_unwind(|| {
                        blocking_call(addr, "POST", "/documents/sync", Some(&token), Some(body))
                    });
                    match attempt {
                        Ok((200, _)) => acknowledged.lock().unwrap().push(format!("d{id}")),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    crate::support::eventually_blocking("200 acknowledged syncs", Duration::from_secs(60), || {
        (acknowledged.lock().unwrap().len() >= 200).then_some(())
    });
    process.signal("KILL");
    dead.store(true, Ordering::SeqCst);
    let _ = process.wait(Duration::from_secs(30));
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged: BTreeSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();

    let process = ServeProcess::start(&data, &["kms", "search"], &quiet);
    let token = login(&process);
    let addr = process.addr("search");
    let (status, info) = blocking_call(addr, "GET", "/collections/elements", Some(&token), None);
    assert_eq!(status, 200);
    assert!(info["num_documents"].as_u64().unwrap() >= acknowledged.len() as u64, "{info}");
    for id in &acknowledged {
        let (status, answer) = blocking_call(addr, "GET", &format!("/documents/{id}"), Some(&token), None);
        assert_eq!(status, 200, "acknowledged {id} was lost: {answer}");
    }
    let (status, found) = blocking_call(
        addr,
        "POST",
        "/search",
        Some(&token),
        Some(json!({"q": "survivor", "query_by": "comment", "max_hits": 1})),
    );
    assert_eq!(status, 200);
    assert!(found["found"].as_u64().unwrap() >= acknowledged.len() as u64);
}
