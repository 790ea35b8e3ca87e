//! Service A over HTTP on SQLite and PostgreSQL: sequence numbers unique per element type under
//! concurrency, reorder as an exchange in one transaction, versions with their data, paging,
//! every bad input as a 4xx JSON error, and the outbox that delivers every change to search
//! once, in order per element, whatever search's availability. Search here is a stand-in
//! that implements its `POST /documents/sync` (support/search_peer.rs); the sequence role is
//! the real one, started with every other role except search.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fountain::platform::role::Role;
use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{assert_error_shape, eventually, Backend, SearchPeer, TestApp, ANONYMOUS};

/// Every role but search, with search's address pointing at `peer` and quick retries.
async fn spawn_with_peer(backend: Backend, peer: &SearchPeer) -> TestApp {
    spawn_with_peer_and(backend, peer, |_| {}).await
}

async fn spawn_with_peer_and(
    backend: Backend,
    peer: &SearchPeer,
    adjust: impl FnOnce(&mut fountain::config::Config),
) -> TestApp {
    let selected: Vec<&'static dyn Role> =
        fountain::roles::ALL.iter().copied().filter(|r| r.name() != "search").collect();
    let url = peer.url();
    TestApp::spawn_roles(
        backend,
        &selected,
        move |config| {
            config.peers.insert("search".into(), url);
            config.set_role_setting("sequence", "initial_retry_delay_ms", 20);
            config.set_role_setting("sequence", "max_retry_delay_seconds", 1);
            config.set_role_setting("sequence", "poll_interval_ms", 100);
            config.server.body_limit_bytes = 1 << 20;
            adjust(config);
        },
        None,
    )
    .await
}

/// A plain user's access token (the seed's client calls Service A with one).
async fn user_token(app: &TestApp) -> String {
    app.kms().register(ANONYMOUS, "writer", &[]).await.ok();
    app.kms().login("writer").await.access_token
}

const WAIT: Duration = Duration::from_secs(60);

/// Waits until the peer has accepted `count` documents; returns them.
async fn accepted_at_least(peer: &SearchPeer, count: usize) -> Vec<crate::support::search_peer::Synced> {
    eventually(format!("{count} documents at search"), WAIT, async || {
        Some(peer.accepted()).filter(|got| got.len() >= count)
    })
    .await
}

/// Waits until the outbox is empty.
async fn outbox_drained(app: &TestApp, token: &str) {
    eventually("an empty outbox", WAIT, async || {
        Some(()).filter(|_| true).and(
            Some(app.sequence().sync_status(token).await.ok()).filter(|s| s.outboxDepth == 0).map(|_| ()),
        )
    })
    .await
}

async fn an_element_gets_the_next_number_of_its_type_and_creating_it_again_is_409(backend: Backend) {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(backend, &peer).await;
    let token = user_token(&app).await;
    let seq = app.sequence();
    let first = seq.create(&token, "script", 1, "Test sequence generation.").await.ok();
    assert_eq!((first.sequenceNumber, first.comment.as_str()), (1, "Test sequence generation."));
    assert_eq!(seq.create(&token, "script", 2, "second").await.ok().sequenceNumber, 2);
    // Numbers are per element type; element ids repeat across types.
    assert_eq!(seq.create(&token, "character", 1, "a character").await.ok().sequenceNumber, 1);
    assert_eq!(seq.create(&token, "script", 1, "again").await.refusal(), (409, "already_exists"));
    let detail = seq.get(&token, "script", 1).await.ok();
    assert_eq!((detail.element.sequenceNumber, detail.element.versionNumber), (1, 1));
    assert_eq!(detail.versions.len(), 1);
    assert!(detail.versions[0].newVersionData.is_none());
    app.stop().await;
}
on_both_backends!(an_element_gets_the_next_number_of_its_type_and_creating_it_again_is_409);

async fn a_hundred_concurrent_creates_get_a_hundred_distinct_numbers(backend: Backend) {
    let peer = SearchPeer::start();
    let app = spawn_with_peer_and(backend, &peer, |config| config.server.workers = 4).await;
    let token = user_token(&app).await;
    let creates = (1..=100).map(|id| {
        let token = token.clone();
        let app = &app;
        async move { app.sequence().create(&token, "action", id, "concurrent").await }
    });
    let answers = futures_util::future::join_all(creates).await;
    let numbers: Vec<i64> = answers.iter().map(|a| a.ok().sequenceNumber).collect();
    let distinct: BTreeSet<i64> = numbers.iter().copied().collect();
    assert_eq!(distinct.len(), 100, "duplicates among {numbers:?}");
    assert_eq!(distinct, (1..=100).collect::<BTreeSet<i64>>());
    let page = app.sequence().list(&token, "elementType=action&limit=500").await.ok();
    let stored: BTreeSet<i64> = page.elements.iter().map(|e| e.sequenceNumber).collect();
    assert_eq!(stored, distinct);
    app.stop().await;
}
on_both_backends!(a_hundred_concurrent_creates_get_a_hundred_distinct_numbers);

async fn reorder_exchanges_the_numbers_the_listed_elements_hold(backend: Backend) {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(backend, &peer).await;
    let token = user_token(&app).await;
    let seq = app.sequence();
    for id in 1..=5 {
        seq.create(&token, "section", id, &format!("section {id}")).await.ok();
    }
    // Elements 2, 4 and 5 hold 2, 4 and 5; in the order 5, 2, 4 they get 2, 4 and 5.
    let request = json!({"elementIds": [2, 4, 5], "newOrder": [5, 2, 4]});
    let answer = seq.reorder(&token, request).await.ok();
    let moved: Vec<(i64, i64, i64)> = answer
        .reorderedElements
        .iter()
        .map(|e| (e.elementId, e.oldSequenceNumber, e.newSequenceNumber))
        .collect();
    assert_eq!(moved, [(5, 5, 2), (2, 2, 4), (4, 4, 5)]);
    let page = seq.list(&token, "elementType=section").await.ok();
    let order: Vec<(i64, i64)> = page.elements.iter().map(|e| (e.sequenceNumber, e.elementId)).collect();
    assert_eq!(order, [(1, 1), (2, 5), (3, 3), (4, 2), (5, 4)]);
    // The same order again moves nothing.
    let again = seq.reorder(&token, json!({"elementIds": [2, 4, 5], "newOrder": [5, 2, 4]})).await.ok();
    assert!(again.reorderedElements.is_empty());
    app.stop().await;
}
on_both_backends!(reorder_exchanges_the_numbers_the_listed_elements_hold);

#[actix_web::test]
async fn reorder_refuses_a_non_permutation_unknown_ids_and_ids_of_several_types_without_a_type() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Sqlite, &peer).await;
    let token = user_token(&app).await;
    let seq = app.sequence();
    for id in 1..=3 {
        seq.create(&token, "script", id, "s").await.ok();
    }
    seq.create(&token, "character", 1, "c").await.ok();
    for (ids, order) in
        [(json!([2, 3]), json!([2])), (json!([2, 3]), json!([2, 2])), (json!([2, 3]), json!([2, 9]))]
    {
        let answer = seq.reorder(&token, json!({"elementIds": ids, "newOrder": order})).await;
        assert_eq!(answer.refusal(), (422, "validation_failed"));
        assert_eq!(answer.body["details"]["field"], "newOrder");
    }
    let repeated = seq.reorder(&token, json!({"elementIds": [2, 2], "newOrder": [2, 2]})).await;
    assert_eq!(repeated.body["details"]["field"], "elementIds");
    // Id 1 is a script and a character.
    let ambiguous = seq.reorder(&token, json!({"elementIds": [1, 2], "newOrder": [2, 1]})).await;
    assert_eq!(ambiguous.refusal(), (422, "validation_failed"));
    assert_eq!(ambiguous.body["details"]["field"], "elementType");
    let typed = json!({"elementIds": [1, 2], "newOrder": [2, 1], "elementType": "script"});
    assert_eq!(seq.reorder(&token, typed).await.ok().reorderedElements.len(), 2);
    let unknown = seq.reorder(&token, json!({"elementIds": [2, 77], "newOrder": [77, 2]})).await;
    assert_eq!(unknown.refusal(), (404, "not_found"));
    assert_eq!(unknown.body["details"]["missing"], json!([77]));
    let wrong_type = json!({"elementIds": [2, 3], "newOrder": [3, 2], "elementType": "action"});
    assert_eq!(seq.reorder(&token, wrong_type).await.refusal(), (404, "not_found"));
    app.stop().await;
}

async fn versions_are_numbered_and_keep_their_data(backend: Backend) {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(backend, &peer).await;
    let token = user_token(&app).await;
    let seq = app.sequence();
    seq.create(&token, "spokenWord", 9, "a line").await.ok();
    let data = json!({"text": "Where were you?", "speaker": {"name": "MARGARET"}});
    let second = seq.version(&token, "spokenWord", 9, data.clone(), "second take").await.ok();
    assert_eq!((second.versionNumber, second.comment.as_str()), (2, "second take"));
    // The largest data accepted: 64 KiB of compact JSON.
    let filler = "x".repeat(64 * 1024 - r#"{"t":""}"#.len());
    let largest = json!({ "t": filler });
    assert_eq!(seq.version(&token, "spokenWord", 9, largest.clone(), "big").await.ok().versionNumber, 3);
    let detail = seq.get(&token, "spokenWord", 9).await.ok();
    assert_eq!(detail.element.versionNumber, 3);
    let numbers: Vec<i32> = detail.versions.iter().map(|v| v.versionNumber).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(detail.versions[1].newVersionData, Some(data));
    assert_eq!(detail.versions[2].newVersionData, Some(largest));
    let too_big = json!({ "t": format!("{filler}y") });
    let refused = seq.version(&token, "spokenWord", 9, too_big, "too big").await;
    assert_eq!(refused.refusal(), (422, "validation_failed"));
    assert_eq!(refused.body["details"]["field"], "newVersionData");
    assert_eq!(seq.version(&token, "spokenWord", 10, json!({}), "x").await.refusal(), (404, "not_found"));
    assert_eq!(seq.version(&token, "script", 9, json!({}), "x").await.refusal(), (404, "not_found"));
    app.stop().await;
}
on_both_backends!(versions_are_numbered_and_keep_their_data);

#[actix_web::test]
async fn elements_are_listed_a_page_at_a_time_by_type_then_number() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Sqlite, &peer).await;
    let token = user_token(&app).await;
    let seq = app.sequence();
    for id in 1..=5 {
        seq.create(&token, "script", id, "s").await.ok();
    }
    for id in 1..=3 {
        seq.create(&token, "action", id, "a").await.ok();
    }
    let mut seen = Vec::new();
    let mut query = "limit=3".to_string();
    loop {
        let page = seq.list(&token, &query).await.ok();
        assert!(page.elements.len() <= 3);
        seen.extend(page.elements.iter().map(|e| (e.elementType.as_str(), e.sequenceNumber)));
        match page.nextCursor {
            Some(cursor) => query = format!("limit=3&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<(&str, i64)> =
        (1..=3).map(|n| ("action", n)).chain((1..=5).map(|n| ("script", n))).collect();
    assert_eq!(seen, expected);
    let scripts = seq.list(&token, "elementType=script&limit=2").await.ok();
    assert_eq!(scripts.elements.len(), 2);
    assert!(scripts.elements.iter().all(|e| e.elementType.as_str() == "script"));
    app.stop().await;
}

/// `POST /sequence` with a body sent as is.
async fn post_raw(app: &TestApp, token: &str, content_type: &str, body: &'static [u8]) -> (u16, Value) {
    let mut response = app
        .client
        .post(app.url("sequence", "/sequence"))
        .insert_header(("authorization", format!("Bearer {token}")))
        .insert_header(("content-type", content_type))
        .send_body(body)
        .await
        .expect("request sent");
    let bytes = response.body().await.expect("body read");
    (response.status().as_u16(), serde_json::from_slice(&bytes).expect("JSON answer"))
}

#[actix_web::test]
async fn bad_input_for_every_field_is_a_4xx_json_error() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Sqlite, &peer).await;
    let token = user_token(&app).await;
    app.sequence().create(&token, "script", 1, "exists").await.ok();
    let long = "c".repeat(1001);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/sequence", json!({"elementType": "scene", "elementId": 1, "comment": "c"}), "elementType"),
        ("/sequence", json!({"elementType": 3, "elementId": 1, "comment": "c"}), "elementType"),
        ("/sequence", json!({"elementId": 1, "comment": "c"}), ""),
        ("/sequence", json!({"elementType": "script", "elementId": 0, "comment": "c"}), "elementId"),
        ("/sequence", json!({"elementType": "script", "elementId": -4, "comment": "c"}), "elementId"),
        (
            "/sequence",
            json!({"elementType": "script", "elementId": 2147483648i64, "comment": "c"}),
            "elementId",
        ),
        ("/sequence", json!({"elementType": "script", "elementId": "1", "comment": "c"}), "elementId"),
        ("/sequence", json!({"elementType": "script", "elementId": 1.5, "comment": "c"}), "elementId"),
        ("/sequence", json!({"elementType": "script", "elementId": 2, "comment": long}), "comment"),
        ("/sequence", json!({"elementType": "script", "elementId": 2, "comment": 7}), "comment"),
        ("/sequence", json!({"elementType": "script", "elementId": 2, "comment": "a\u{0}b"}), "comment"),
        ("/sequence", json!({"elementType": "script", "elementId": 2, "comment": "c", "x": 1}), ""),
        ("/sequence/reorder", json!({"elementIds": "1", "newOrder": [1]}), "elementIds"),
        ("/sequence/reorder", json!({"elementIds": [1], "newOrder": ["1"]}), "newOrder[0]"),
        ("/sequence/reorder", json!({"elementIds": [], "newOrder": []}), "elementIds"),
        ("/sequence/reorder", json!({"elementIds": [0], "newOrder": [0]}), "elementIds"),
        (
            "/sequence/reorder",
            json!({"elementIds": [1], "newOrder": [1], "elementType": "scene"}),
            "elementType",
        ),
        (
            "/sequence/reorder",
            json!({"elementIds": (1..=1001).collect::<Vec<i64>>(),
                                      "newOrder": (1..=1001).collect::<Vec<i64>>()}),
            "elementIds",
        ),
        (
            "/sequence/version",
            json!({"elementType": "script", "elementId": 1, "newVersionData": [1], "comment": "c"}),
            "newVersionData",
        ),
        (
            "/sequence/version",
            json!({"elementType": "script", "elementId": 1, "newVersionData": "x", "comment": "c"}),
            "newVersionData",
        ),
        ("/sequence/version", json!({"elementType": "script", "elementId": 1, "comment": "c"}), ""),
        (
            "/sequence/version",
            json!({"elementType": "dialogue", "elementId": 1, "newVersionData": {}, "comment": "c"}),
            "elementType",
        ),
        (
            "/sequence/version",
            json!({"elementType": "script", "elementId": 0, "newVersionData": {}, "comment": "c"}),
            "elementId",
        ),
        (
            "/sequence/version",
            json!({"elementType": "script", "elementId": 1, "newVersionData": {}, "comment": long}),
            "comment",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = app.call("POST", "sequence", path, Some(&token), Some(body.clone())).await;
        assert_eq!(status, 422, "{path} {body}: {answer}");
        assert_error_shape(&answer);
        if !field.is_empty() {
            assert_eq!(answer["details"]["field"], field, "{path} {body}: {answer}");
        }
    }
    // Not JSON, not JSON's content type, too large.
    let (status, answer) = post_raw(&app, &token, "application/json", b"{\"elementType\":").await;
    assert_eq!((status, assert_error_shape(&answer).as_str()), (400, "malformed_json"));
    let (status, answer) = post_raw(&app, &token, "text/plain", b"{}").await;
    assert_eq!((status, assert_error_shape(&answer).as_str()), (415, "unsupported_media_type"));
    let huge = json!({"elementType": "script", "elementId": 3, "newVersionData": {"t": "x".repeat(2 << 20)}, "comment": "c"});
    let (status, answer) = app.call("POST", "sequence", "/sequence/version", Some(&token), Some(huge)).await;
    assert_eq!((status, assert_error_shape(&answer).as_str()), (413, "payload_too_large"));
    // Query and path input.
    for query in
        ["elementType=scene", "limit=0", "limit=501", "limit=x", "cursor=nonsense", "cursor=script.x"]
    {
        let (status, answer) =
            app.call("GET", "sequence", &format!("/elements?{query}"), Some(&token), None).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_error_shape(&answer);
    }
    for path in ["/elements/scene/1", "/elements/script/x", "/elements/script/99"] {
        let (status, answer) = app.call("GET", "sequence", path, Some(&token), None).await;
        assert_eq!((status, assert_error_shape(&answer).as_str()), (404, "not_found"), "{path}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn callers_need_a_token_and_resync_needs_an_admin() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Sqlite, &peer).await;
    let token = user_token(&app).await;
    let seq = app.sequence();
    assert_eq!(seq.create(ANONYMOUS, "script", 1, "c").await.refusal(), (401, "unauthorized"));
    assert_eq!(seq.list(ANONYMOUS, "").await.refusal(), (401, "unauthorized"));
    assert_eq!(seq.sync_status(ANONYMOUS).await.refusal(), (401, "unauthorized"));
    assert_eq!(seq.resync(&token).await.refusal(), (403, "forbidden"));
    // A service may write too.
    let admin = app.admin_token().await;
    let service = app.service_token(&admin, "screenwriter").await;
    assert_eq!(seq.create(&service, "script", 1, "by a service").await.ok().sequenceNumber, 1);
    app.stop().await;
}

/// The claims of a JWT, read without checking it (the test only looks at who sent it).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn every_change_reaches_search_in_order_with_the_roles_own_token(backend: Backend) {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(backend, &peer).await;
    let token = user_token(&app).await;
    let seq = app.sequence();
    seq.create(&token, "script", 1, "first").await.ok();
    seq.create(&token, "script", 2, "second").await.ok();
    seq.create(&token, "character", 1, "MARGARET").await.ok();
    seq.version(&token, "script", 1, json!({"text": "v2"}), "revised").await.ok();
    seq.reorder(&token, json!({"elementIds": [1, 2], "newOrder": [2, 1], "elementType": "script"}))
        .await
        .ok();
    // script 1: create v1, create v2, update v1 and v2 (moved to 2); script 2: create, update;
    // character 1: create.
    let got = accepted_at_least(&peer, 7).await;
    outbox_drained(&app, &token).await;
    assert_eq!(peer.accepted().len(), 7);
    for synced in &got {
        let who = claims(&synced.token);
        assert_eq!(who["sub"], "sequence");
        assert_eq!(who["roles"], json!(["service"]));
    }
    let of = |kind: &str, id: i64| -> Vec<(String, String, i64)> {
        got.iter()
            .filter(|s| s.document["element_type"] == kind && s.document["element_id"] == id)
            .map(|s| {
                let d = &s.document;
                (
                    s.operation.clone(),
                    d["id"].as_str().unwrap().to_string(),
                    d["sequence_number"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let script_one = of("script", 1);
    assert_eq!(
        script_one,
        [
            ("create".into(), "script_1_1".into(), 1),
            ("create".into(), "script_1_2".into(), 1),
            ("update".into(), "script_1_1".into(), 2),
            ("update".into(), "script_1_2".into(), 2)
        ]
    );
    assert_eq!(
        of("script", 2),
        [("create".into(), "script_2_1".into(), 2), ("update".into(), "script_2_1".into(), 1)]
    );
    assert_eq!(of("character", 1), [("create".into(), "character_1_1".into(), 1)]);
    let version_two = got.iter().find(|s| s.document["id"] == "script_1_2").unwrap();
    assert_eq!(
        version_two.document,
        json!({"id": "script_1_2", "element_type": "script", "element_id": 1, "sequence_number": 1,
               "version_number": 2, "comment": "revised", "service_name": "service_a"})
    );
    let metrics = app.metrics("sequence").await;
    assert!(metrics.contains("sequence_sync_deliveries_total{outcome=\"delivered\"} 7"), "{metrics}");
    assert!(metrics.contains("sequence_outbox_depth 0"), "{metrics}");
    app.stop().await;
}
on_both_backends!(every_change_reaches_search_in_order_with_the_roles_own_token);

async fn with_search_down_writes_succeed_and_every_change_arrives_once_when_it_is_back(backend: Backend) {
    let mut peer = SearchPeer::start();
    let app = spawn_with_peer(backend, &peer).await;
    let token = user_token(&app).await;
    peer.stop().await;
    // All 500 answered 201 while search cannot be reached (50 at a time, as clients would).
    let mut numbers = BTreeSet::new();
    for batch in (1..=500).collect::<Vec<i64>>().chunks(50) {
        let creates = batch.iter().map(|id| {
            let (app, token) = (&app, token.clone());
            async move { app.sequence().create(&token, "action", *id, &format!("action {id}")).await.ok() }
        });
        for created in futures_util::future::join_all(creates).await {
            numbers.insert(created.sequenceNumber);
        }
    }
    assert_eq!(numbers.len(), 500);
    let status = eventually("a delivery failure to be reported", WAIT, async || {
        Some(app.sequence().sync_status(&token).await.ok()).filter(|s| s.lastError.is_some())
    })
    .await;
    assert_eq!(status.outboxDepth, 500);
    assert!(peer.accepted().is_empty());
    // A 503 is retried as well.
    peer.restart();
    peer.answer(503);
    let metrics = eventually("a 503 answer to be retried", WAIT, async || {
        let text = app.metrics("sequence").await;
        Some(text).filter(|t| t.contains("sequence_sync_deliveries_total{outcome=\"retry\"}"))
    })
    .await;
    assert!(!metrics.contains("outcome=\"failed\""), "{metrics}");
    assert_eq!(app.sequence().sync_status(&token).await.ok().outboxDepth, 500);
    peer.answer(0);
    accepted_at_least(&peer, 500).await;
    outbox_drained(&app, &token).await;
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for synced in peer.accepted() {
        *times.entry(synced.document["id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(times.len(), 500, "every element arrived");
    assert!(times.values().all(|n| *n == 1), "none twice");
    let status = app.sequence().sync_status(&token).await.ok();
    assert_eq!((status.outboxDepth, status.failedCount), (0, 0));
    app.stop().await;
}
on_both_backends!(with_search_down_writes_succeed_and_every_change_arrives_once_when_it_is_back);

#[actix_web::test]
async fn a_4xx_from_search_is_a_permanent_failure_recorded_and_counted() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Sqlite, &peer).await;
    let token = user_token(&app).await;
    peer.answer(400);
    app.sequence().create(&token, "script", 1, "refused").await.ok();
    let status = eventually("the refusal to be recorded", WAIT, async || {
        Some(app.sequence().sync_status(&token).await.ok()).filter(|s| s.failedCount == 1)
    })
    .await;
    assert_eq!(status.outboxDepth, 0);
    let error = status.lastError.expect("the last error");
    assert!(error.message.contains("400"), "{}", error.message);
    assert!(error.at.ends_with('Z'));
    let metrics = app.metrics("sequence").await;
    assert!(metrics.contains("sequence_sync_deliveries_total{outcome=\"failed\"} 1"), "{metrics}");
    // The element's next change is not held up by the refused one.
    peer.answer(0);
    app.sequence().version(&token, "script", 1, json!({"a": 1}), "next").await.ok();
    let got = accepted_at_least(&peer, 1).await;
    assert_eq!(got[0].document["id"], "script_1_2");
    app.stop().await;
}

#[actix_web::test]
async fn resync_sends_every_version_of_every_element_again() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Sqlite, &peer).await;
    let token = user_token(&app).await;
    let admin = app.admin_token().await;
    let seq = app.sequence();
    seq.create(&token, "script", 1, "a").await.ok();
    seq.create(&token, "character", 1, "b").await.ok();
    seq.version(&token, "script", 1, json!({"t": 1}), "c").await.ok();
    accepted_at_least(&peer, 3).await;
    assert_eq!(seq.resync(&admin).await.ok().queued, 3);
    let got = accepted_at_least(&peer, 6).await;
    let resent: BTreeSet<&str> = got[3..].iter().map(|s| s.document["id"].as_str().unwrap()).collect();
    assert_eq!(resent, BTreeSet::from(["script_1_1", "script_1_2", "character_1_1"]));
    assert!(got[3..].iter().all(|s| s.operation == "update"));
    app.stop().await;
}

#[actix_web::test]
async fn every_example_in_the_openapi_document_succeeds_when_sent_in_order() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Sqlite, &peer).await;
    let token = user_token(&app).await;
    let (status, spec) = app.get_json("sequence", "/openapi.json").await;
    assert_eq!(status, 200);
    let example = |schema: &str| spec["components"]["schemas"][schema]["example"].clone();
    // The element the create example makes is the one the other examples name.
    for (path, schema, expected) in [
        ("/sequence", "SequenceRequest", 201),
        ("/sequence/version", "VersionRequest", 201),
        ("/sequence/reorder", "ReorderRequest", 200),
    ] {
        let body = example(schema);
        assert!(body.is_object(), "{schema} has an example");
        let (status, answer) = app.call("POST", "sequence", path, Some(&token), Some(body)).await;
        assert_eq!(status, expected, "{path}: {answer}");
    }
    let params =
        spec["paths"]["/elements/{elementType}/{elementId}"]["get"]["parameters"].as_array().unwrap();
    let param = |name: &str| params.iter().find(|p| p["name"] == name).unwrap()["example"].clone();
    let path = format!(
        "/elements/{}/{}",
        param("elementType").as_str().unwrap(),
        param("elementId").as_i64().unwrap()
    );
    let (status, answer) = app.call("GET", "sequence", &path, Some(&token), None).await;
    assert_eq!(status, 200, "{path}: {answer}");
    assert_eq!(answer["versions"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[actix_web::test]
async fn the_seeds_client_path_through_the_gateway_creates_an_element_with_a_user_token() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Sqlite, &peer).await;
    let token = user_token(&app).await;
    let body = json!({"elementType": "script", "elementId": 1, "comment": "Test sequence generation."});
    let (status, answer) = app.call("POST", "gateway", "/service_a/sequence", Some(&token), Some(body)).await;
    assert_eq!((status, answer), (201, json!({"sequenceNumber": 1, "comment": "Test sequence generation."})));
    let got = accepted_at_least(&peer, 1).await;
    assert_eq!(got[0].document["id"], "script_1_1");
    app.stop().await;
}

/// The UNIQUE constraint, not the numbering lock, is what makes a number unique: a writer that
/// does not take the lock (here a plain SQL transaction) holds the next number uncommitted; the
/// create waits on the constraint, is refused when that writer commits, and takes the number
/// after it.
#[actix_web::test]
async fn a_number_taken_by_a_concurrent_writer_is_refused_by_the_constraint_and_the_create_retries() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Postgres, &peer).await;
    let token = user_token(&app).await;
    app.sequence().create(&token, "script", 1, "first").await.ok();
    let mut other = PgConnection::establish(&app.database.url).unwrap();
    other
        .batch_execute(
            "BEGIN; INSERT INTO sequence_elements (element_type, element_id, sequence_number, \
             current_version, comment, created_at, updated_at) \
             VALUES ('script', 99, 2, 1, 'another writer', now(), now())",
        )
        .unwrap();
    let sequence = app.sequence();
    let create = sequence.create(&token, "script", 2, "waits for the other writer");
    let commit_when_waited_on = async {
        #[derive(diesel::QueryableByName)]
        struct Waiting {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut probe = PgConnection::establish(&app.database.url).unwrap();
        eventually("the create to wait on the uncommitted number", WAIT, async || {
            let waiting: Waiting = diesel::sql_query(
                "SELECT count(*) AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .get_result(&mut probe)
            .unwrap();
            (waiting.n > 0).then_some(())
        })
        .await;
        other.batch_execute("COMMIT").unwrap();
    };
    let (created, ()) = futures_util::future::join(create, commit_when_waited_on).await;
    assert_eq!(created.ok().sequenceNumber, 3);
    let page = app.sequence().list(&token, "elementType=script").await.ok();
    let held: Vec<(i64, i64)> = page.elements.iter().map(|e| (e.sequenceNumber, e.elementId)).collect();
    assert_eq!(held, [(1, 1), (2, 99), (3, 2)]);
    app.stop().await;
}

#[actix_web::test]
async fn a_token_search_refuses_is_replaced_and_the_document_still_delivered_at_once() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer(Backend::Sqlite, &peer).await;
    let token = user_token(&app).await;
    peer.refuse_tokens(1);
    app.sequence().create(&token, "script", 1, "after a refused token").await.ok();
    let got = accepted_at_least(&peer, 1).await;
    assert_eq!(got[0].document["id"], "script_1_1");
    outbox_drained(&app, &token).await;
    let status = app.sequence().sync_status(&token).await.ok();
    assert_eq!(status.failedCount, 0);
    let metrics = app.metrics("sequence").await;
    assert!(metrics.contains("sequence_sync_deliveries_total{outcome=\"delivered\"} 1"), "{metrics}");
    assert!(!metrics.contains("outcome=\"retry\""), "{metrics}");
    app.stop().await;
}

#[actix_web::test]
async fn a_sync_call_that_hangs_holds_up_only_its_own_element() {
    let peer = SearchPeer::start();
    let app = spawn_with_peer_and(Backend::Sqlite, &peer, |config| {
        config.set_role_setting("sequence", "delivery_timeout_ms", 600_000);
    })
    .await;
    let token = user_token(&app).await;
    peer.hang_on("script_1_1");
    app.sequence().create(&token, "script", 1, "hangs at search").await.ok();
    eventually("the call to hang", WAIT, async || (peer.hanging() == 1).then_some(())).await;
    app.sequence().version(&token, "script", 1, json!({"a": 1}), "waits behind it").await.ok();
    app.sequence().create(&token, "character", 1, "goes on").await.ok();
    app.sequence().create(&token, "action", 1, "goes on").await.ok();
    let got = accepted_at_least(&peer, 2).await;
    let ids: BTreeSet<&str> = got.iter().map(|s| s.document["id"].as_str().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from(["character_1_1", "action_1_1"]));
    // The element's next change waits for the one in flight: order per element holds.
    let status = app.sequence().sync_status(&token).await.ok();
    assert_eq!(status.outboxDepth, 2);
    app.stop().await;
}
