//! Service A and the search service together, end to end: an element written through the
//! gateway as the seed's client does (`POST /service_a/sequence` with a user token) is found by
//! `POST /typesense_client/search` and by the seed's `POST /search` on the gateway, and so are
//! its versions and reorders; and with search in a process of its own that is stopped while 500
//! elements are written, every element is found once search is back, none twice; and writes whose
//! retries an outage pushed far out are delivered as soon as search takes a delivery again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use serde_json::{json, Value};

use crate::on_both_backends;
use crate::support::{
    blocking_call as call, blocking_get, eventually, eventually_blocking, Backend, ServeProcess, TestApp,
    TestDatabase, ANONYMOUS, PASSWORD,
};

/// Generous: the outbox retries with backoff while the whole suite loads two cores.
const WAIT: Duration = Duration::from_secs(60);

/// The seed's search body (§7, "Perform a Search").
fn seed_search_body() -> Value {
    json!({"q": "script", "query_by": "element_type", "filter_by": null,
           "sort_by": "sequence_number:asc", "max_hits": 10})
}

/// Each hit of a search answer as `id -> (sequence_number, version_number, comment)`.
type Found = BTreeMap<String, (i32, i32, String)>;

fn found(answer: &fountain::roles::search::SearchResponse) -> Found {
    answer
        .hits
        .iter()
        .map(|h| {
            let d = &h.document;
            (d.id.clone(), (d.sequence_number, d.version_number, d.comment.clone()))
        })
        .collect()
}

/// Asks `POST /typesense_client/search` with the seed's body until it finds exactly `expected`;
/// then asks the seed's `POST /search` on the gateway, which must find the same.
async fn search_finds(app: &TestApp, token: &str, expected: &Found) {
    let gateway = app.gateway();
    eventually(format!("search to find {expected:?}"), WAIT, async || {
        let answer = gateway.typesense_client().search(token, seed_search_body()).await.ok();
        (found(&answer) == *expected).then_some(())
    })
    .await;
    let answer = gateway.seed_search().search(token, seed_search_body()).await.ok();
    assert_eq!(found(&answer), *expected, "the seed's POST /search on the gateway finds the same");
    assert_eq!(answer.found, expected.len() as u64);
}

fn expect(entries: &[(&str, i32, i32, &str)]) -> Found {
    entries
        .iter()
        .map(|(id, seq, ver, comment)| (id.to_string(), (*seq, *ver, comment.to_string())))
        .collect()
}

async fn an_element_written_through_the_gateway_is_found_with_its_versions_and_reorders(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        |c| {
            c.set_role_setting("sequence", "poll_interval_ms", 100);
            c.set_role_setting("sequence", "initial_retry_delay_ms", 20);
            c.set_role_setting("sequence", "max_retry_delay_seconds", 1);
        },
        None,
    )
    .await;
    let gateway = app.gateway();
    gateway.kms().register(ANONYMOUS, "writer", &[]).await.ok();
    let user = gateway.kms().login("writer").await.access_token;
    let service_a = gateway.service_a();

    let created = service_a.create(&user, "script", 1, "Test sequence generation.").await.ok();
    assert_eq!((created.sequenceNumber, created.comment.as_str()), (1, "Test sequence generation."));
    let answer = search_finds_one(&app, &user).await;
    let hit = &answer.hits[0].document;
    assert_eq!(
        serde_json::to_value(hit).unwrap(),
        json!({"id": "script_1_1", "element_type": "script", "element_id": 1, "sequence_number": 1,
               "version_number": 1, "comment": "Test sequence generation.", "service_name": "service_a"})
    );
    assert!(
        answer.hits[0].highlights.iter().any(|h| h.field == "element_type"),
        "the hit says where it matched: {:?}",
        answer.hits[0].highlights
    );

    let version =
        service_a.version(&user, "script", 1, json!({"text": "FADE IN:"}), "Second draft.").await.ok();
    assert_eq!(version.versionNumber, 2);
    search_finds(
        &app,
        &user,
        &expect(&[("script_1_1", 1, 1, "Test sequence generation."), ("script_1_2", 1, 2, "Second draft.")]),
    )
    .await;

    assert_eq!(
        service_a.create(&user, "script", 2, "Another test sequence generation.").await.ok().sequenceNumber,
        2
    );
    let reordered = service_a
        .reorder(&user, json!({"elementIds": [1, 2], "newOrder": [2, 1], "elementType": "script"}))
        .await
        .ok();
    assert_eq!(reordered.reorderedElements.len(), 2);
    search_finds(
        &app,
        &user,
        &expect(&[
            ("script_2_1", 1, 1, "Another test sequence generation."),
            ("script_1_1", 2, 1, "Test sequence generation."),
            ("script_1_2", 2, 2, "Second draft."),
        ]),
    )
    .await;
    // sort_by sequence_number:asc: the element moved to the front comes first.
    let answer = gateway.seed_search().search(&user, seed_search_body()).await.ok();
    assert_eq!(answer.hits[0].document.id, "script_2_1");
    app.stop().await;
}
on_both_backends!(an_element_written_through_the_gateway_is_found_with_its_versions_and_reorders);

/// Waits until the seed's search through `/typesense_client` finds exactly one hit.
async fn search_finds_one(app: &TestApp, token: &str) -> fountain::roles::search::SearchResponse {
    eventually("search to find the new element", WAIT, async || {
        let answer = app.gateway().typesense_client().search(token, seed_search_body()).await.ok();
        (answer.found == 1).then_some(answer)
    })
    .await
}

// ---- search as a process of its own, stopped and started again ----

const ELEMENTS: i64 = 500;

/// A port nobody listens on now, for a process both sides are told about before it starts.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every document search holds, read a page of 250 at a time: `found`, and each id with how
/// often it came back.
fn every_document(search: SocketAddr, token: &str) -> (u64, BTreeMap<String, usize>) {
    let mut ids = BTreeMap::new();
    let mut found = 0;
    for page in 1..=3 {
        let query = json!({"q": "*", "query_by": "element_type", "sort_by": "sequence_number:asc",
                           "max_hits": 250, "page": page});
        let (status, answer) = call(search, "POST", "/search", Some(token), Some(query));
        assert_eq!(status, 200, "{answer}");
        found = answer["found"].as_u64().expect("found");
        for hit in answer["hits"].as_array().expect("hits") {
            *ids.entry(hit["id"].as_str().expect("id").to_string()).or_insert(0) += 1;
        }
    }
    (found, ids)
}

fn outbox_depth(sequence: SocketAddr, token: &str) -> i64 {
    let (status, answer) = call(sequence, "GET", "/sync/status", Some(token), None);
    assert_eq!(status, 200, "{answer}");
    answer["outboxDepth"].as_i64().expect("outboxDepth")
}

/// Every role but search in one process, search in a process of its own on a port the others
/// are told beforehand, and a user (`writer`) with a token: the deployment of the outage tests.
/// `first_retry_ms` and `max_retry_seconds` set how sequence's outbox backs off.
struct SplitDeployment {
    core: ServeProcess,
    search_env: Vec<(String, String)>,
    search_port: u16,
    data: std::path::PathBuf,
    user: String,
    // Last, so dropped after the processes that use it.
    _database: TestDatabase,
}

impl SplitDeployment {
    fn start(backend: Backend, first_retry_ms: &str, max_retry_seconds: &str) -> Self {
        let database = TestDatabase::create(backend);
        let data = database.dir.path().join("data");
        let search_port = free_port();
        let search_url = format!("http://127.0.0.1:{search_port}");
        // Only the start-up lines at info: nobody reads the logs while the test runs.
        let quiet = "warn,fountain::server=info";
        let base_env = [
            ("FOUNTAIN_DATABASE__URL", database.url.as_str()),
            ("FOUNTAIN_LOG__LEVEL", quiet),
            ("FOUNTAIN_ROLES__KMS__BCRYPT_COST", "4"),
        ];
        let mut core_env = base_env.to_vec();
        core_env.extend([
            ("FOUNTAIN_PEERS__SEARCH", search_url.as_str()),
            ("FOUNTAIN_ROLES__SEQUENCE__POLL_INTERVAL_MS", "100"),
            ("FOUNTAIN_ROLES__SEQUENCE__INITIAL_RETRY_DELAY_MS", first_retry_ms),
            ("FOUNTAIN_ROLES__SEQUENCE__MAX_RETRY_DELAY_SECONDS", max_retry_seconds),
        ]);
        let core =
            ServeProcess::start(&data, &["kms", "secrets", "notify", "sequence", "gateway"], &core_env);
        let peer = |role: &str| format!("http://{}", core.addr(role));
        let mut search_env: Vec<(String, String)> =
            base_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        search_env.extend([
            ("FOUNTAIN_ROLES__SEARCH__PORT".to_string(), search_port.to_string()),
            ("FOUNTAIN_PEERS__KMS".to_string(), peer("kms")),
            ("FOUNTAIN_PEERS__SECRETS".to_string(), peer("secrets")),
            ("FOUNTAIN_PEERS__GATEWAY".to_string(), peer("gateway")),
        ]);
        let user = register_and_log_in(core.addr("kms"));
        Self { core, search_env, search_port, data, user, _database: database }
    }

    /// search, in its process, on the port the others know.
    fn start_search(&self) -> ServeProcess {
        let env: Vec<(&str, &str)> = self.search_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let search = ServeProcess::start(&self.data, &["search"], &env);
        assert_eq!(search.addr("search").port(), self.search_port, "search is where the others know it");
        search
    }

    /// `POST /service_a/sequence` through the gateway with the user's token.
    fn write(&self, id: i64) -> (u16, Value) {
        let body = json!({"elementType": "script", "elementId": id, "comment": format!("Scene {id}.")});
        call(self.core.addr("gateway"), "POST", "/service_a/sequence", Some(&self.user), Some(body))
    }
}

fn register_and_log_in(kms: SocketAddr) -> String {
    let credentials = json!({"username": "writer", "password": PASSWORD});
    let (status, answer) = call(kms, "POST", "/register", None, Some(credentials.clone()));
    assert_eq!(status, 201, "{answer}");
    let (status, session) = call(kms, "POST", "/login", None, Some(credentials));
    assert_eq!(status, 200, "{session}");
    session["access_token"].as_str().expect("access_token").to_string()
}

fn with_search_stopped_every_write_succeeds_and_is_found_once_when_search_is_back(backend: Backend) {
    let deployment = SplitDeployment::start(backend, "50", "1");
    let user = deployment.user.as_str();
    let search = deployment.start_search();
    let search_addr = search.addr("search");

    // Search answers before the outage: the path from sequence to search works.
    let (status, answer) = deployment.write(1);
    assert_eq!(status, 201, "{answer}");
    eventually_blocking("the first element at search", WAIT, || {
        (every_document(search_addr, user).0 == 1).then_some(())
    });
    let sequence = deployment.core.addr("sequence");
    eventually_blocking("the first delivery recorded", WAIT, || {
        (outbox_depth(sequence, user) == 0).then_some(())
    });

    search.signal("TERM");
    let (code, lines) = search.wait(WAIT);
    assert_eq!(code, Some(0), "search stops cleanly: {lines:?}");

    for id in 2..=ELEMENTS {
        let (status, answer) = deployment.write(id);
        assert_eq!(status, 201, "element {id} is written while search is down: {answer}");
    }
    assert_eq!(outbox_depth(sequence, user), ELEMENTS - 1, "nothing is delivered while search is down");

    let search = deployment.start_search();
    eventually_blocking("an empty outbox", WAIT, || (outbox_depth(sequence, user) == 0).then_some(()));
    let (found, ids) = every_document(search_addr, user);
    assert_eq!(found, ELEMENTS as u64, "search counts every element once");
    let expected: BTreeSet<String> = (1..=ELEMENTS).map(|id| format!("script_{id}_1")).collect();
    assert_eq!(ids.keys().cloned().collect::<BTreeSet<_>>(), expected, "every element is found");
    assert!(ids.values().all(|&n| n == 1), "no element comes back twice");
    drop(search);
}

#[test]
fn with_search_stopped_every_write_succeeds_and_is_found_once_when_search_is_back_sqlite() {
    with_search_stopped_every_write_succeeds_and_is_found_once_when_search_is_back(Backend::Sqlite);
}

#[test]
fn with_search_stopped_every_write_succeeds_and_is_found_once_when_search_is_back_postgres() {
    with_search_stopped_every_write_succeeds_and_is_found_once_when_search_is_back(Backend::Postgres);
}

/// Retries that an outage of search pushed far out (here an hour: the first retry delay) are
/// made due as soon as search takes a delivery again, instead of when each backoff ends.
#[test]
fn writes_held_back_by_a_search_outage_are_delivered_at_the_first_delivery_after_it() {
    let deployment = SplitDeployment::start(Backend::Sqlite, "3600000", "3600");
    let user = deployment.user.as_str();
    let write = |id: i64| {
        let (status, answer) = deployment.write(id);
        assert_eq!(status, 201, "element {id}: {answer}");
    };
    let sequence = deployment.core.addr("sequence");
    let retries = || {
        let (_, _, text) = blocking_get(sequence, "/metrics", &[]);
        text.lines()
            .find(|l| l.starts_with("sequence_sync_deliveries_total{") && l.contains("outcome=\"retry\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };

    // Search has not started yet: every write is acknowledged, and its first attempt fails
    // and puts it an hour out.
    const HELD_BACK: i64 = 20;
    for id in 1..=HELD_BACK {
        write(id);
    }
    eventually_blocking("every held-back write tried once", WAIT, || {
        (retries() >= HELD_BACK as f64).then_some(())
    });
    assert_eq!(outbox_depth(sequence, user), HELD_BACK);

    let search = deployment.start_search();
    // The first write after search is back is tried at once; its delivery makes the others due.
    write(HELD_BACK + 1);
    eventually_blocking("an empty outbox", WAIT, || (outbox_depth(sequence, user) == 0).then_some(()));
    let (found, ids) = every_document(search.addr("search"), user);
    assert_eq!(found, HELD_BACK as u64 + 1, "{ids:?}");
    drop(search);
}
