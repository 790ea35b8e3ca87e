//! One conformance suite, run unchanged against the embedded engine and a real Typesense
//! 0.24.1: the same `found`, the same hit set, the same order wherever `sort_by` determines it,
//! and exact matches above typo matches.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{eventually, Backend, TestApp, TypesenseServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Embedded,
    Typesense,
}

/// A running app whose search role uses `engine`, with an admin and a service token.
pub struct SearchSetup {
    pub app: TestApp,
    pub admin: String,
    /// The service token of `sequence`, the seed's caller of `/documents/sync`.
    pub service: String,
    pub typesense: Option<TypesenseServer>,
}

impl SearchSetup {
    pub async fn start(engine: Engine) -> SearchSetup {
        match engine {
            Engine::Embedded => {
                let app = TestApp::spawn(Backend::Sqlite).await;
                let admin = app.admin_token().await;
                let service = sequence_token(&app, &admin).await;
                SearchSetup { app, admin, service, typesense: None }
            }
            Engine::Typesense => {
                let typesense = TypesenseServer::start();
                let url = typesense.url();
                let app = TestApp::spawn_with_injection(Backend::Sqlite, move |c| {
                    c.set_role_setting("search", "backend", "typesense");
                    c.set_role_setting("search", "typesense_url", url);
                    c.set_role_setting("notify", "poll_interval_ms", 50);
                })
                .await;
                let admin = app.admin_token().await;
                // The API key is a secret of the search role, never configuration.
                let rotate = json!({"newSecrets": {"TYPESENSE_API_KEY": typesense.api_key}});
                assert_eq!(app.secrets().rotate(&admin, "search", rotate).await.ok().version, 2);
                eventually("the search role to use the Typesense key", Duration::from_secs(15), async || {
                    let answer = app.search().collection(&admin, "elements").await;
                    (answer.status == 200).then_some(())
                })
                .await;
                let service = sequence_token(&app, &admin).await;
                SearchSetup { app, admin, service, typesense: Some(typesense) }
            }
        }
    }
}

/// A service token of `sequence`, from the API key the all-in-one start provisioned for it.
pub async fn sequence_token(app: &TestApp, admin: &str) -> String {
    let key = app.kms().key(admin, "sequence").await.ok().api_key;
    app.kms().exchange_key(&key).await.ok().access_token
}

/// One fixture element.
pub fn doc(n: i32, element_type: &str, sequence_number: i32, comment: &str) -> Value {
    json!({
        "id": format!("d{n}"), "element_type": element_type, "element_id": n,
        "sequence_number": sequence_number, "version_number": 1 + n % 2, "comment": comment,
        "service_name": if n % 3 == 0 { "importer" } else { "sequence" }
    })
}

/// Screenplay elements chosen so that every rule of the search shows in some query.
fn fixtures() -> Vec<Value> {
    vec![
        doc(1, "script", 12, "INT. KITCHEN - NIGHT"),
        doc(2, "action", 3, "Margaret opens the half-lit door."),
        doc(3, "spokenWord", 7, "MARGARET: Who left the door open?"),
        doc(4, "action", 1, "The house is quiet."),
        doc(5, "section", 9, "EXT. GARDEN - DAY"),
        doc(6, "action", 14, "Doorway shadows stretch across the hall"),
        doc(7, "action", 2, "Margaret's brother enters the kitchen"),
        doc(8, "spokenWord", 11, "THOMAS: Meet me in the garden at noon."),
        doc(9, "action", 5, "A cat sleeps by the window"),
        doc(10, "character", 8, "THOMAS"),
        doc(11, "character", 4, "MARGARET"),
        doc(12, "section", 13, "Section one: the arrival"),
        doc(13, "script", 6, "INT./EXT. CAR - MOVING"),
        doc(14, "action", 10, "kitchen door slams"),
        doc(15, "action", 15, "kitchin door creaks"),
    ]
}

/// What a query must answer.
enum Expect {
    /// Exactly these ids, in this order (sort_by determines it).
    Ordered(&'static [&'static str]),
    /// Exactly these ids, in an order text relevance decides.
    Set(&'static [&'static str]),
}

fn cases() -> Vec<(&'static str, Value, Expect)> {
    use Expect::*;
    let q = |q: &str, query_by: &str| json!({"q": q, "query_by": query_by, "max_hits": 250});
    let all = |filter: &str| json!({"q": "*", "query_by": "comment", "filter_by": filter, "sort_by": "sequence_number:asc", "max_hits": 250});
    vec![
        ("a plain word", q("garden", "comment"), Set(&["d5", "d8"])),
        ("the last word is also a prefix", q("marg", "comment"), Set(&["d2", "d3", "d7", "d11"])),
        ("several words must all match", q("margaret door", "comment"), Set(&["d2", "d3"])),
        ("one typo from four letters", q("huose", "comment"), Set(&["d4"])),
        ("an adjacent swap is one typo", q("thomsa garden", "comment"), Set(&["d8"])),
        ("two typos from seven letters", q("ktichne slams", "comment"), Set(&["d14"])),
        ("no typo below four letters", q("cta", "comment"), Set(&[])),
        ("words dropped from the right", q("thomas spaceship", "comment"), Set(&["d8", "d10"])),
        ("words dropped from the left", q("spaceship garden", "comment"), Set(&["d5", "d8"])),
        ("punctuation inside words is removed", q("half-lit", "comment"), Set(&["d2"])),
        ("INT./EXT. is one word", q("INT./EXT.", "comment"), Set(&["d13"])),
        ("several fields", q("character", "comment,element_type"), Set(&["d10", "d11"])),
        (
            "default order: sequence_number descending",
            q("*", "comment"),
            Ordered(&[
                "d15", "d6", "d12", "d1", "d8", "d14", "d5", "d10", "d3", "d13", "d9", "d11", "d2", "d7",
                "d4",
            ]),
        ),
        (
            "an empty q is every document",
            json!({"q": "", "query_by": "comment", "sort_by": "sequence_number:asc", "max_hits": 3}),
            Ordered(&["d4", "d7", "d2"]),
        ),
        ("string equality ignores case", all("element_type:=SPOKENWORD"), Ordered(&["d3", "d8"])),
        ("string contains words", all("comment:door"), Ordered(&["d2", "d3", "d14", "d15"])),
        ("string list", all("element_type:[character, section]"), Ordered(&["d11", "d10", "d5", "d12"])),
        (
            "string not equal",
            all("element_type:!=action && element_type:!=script"),
            Ordered(&["d11", "d3", "d10", "d5", "d8", "d12"]),
        ),
        ("number equal", all("element_id:7"), Ordered(&["d7"])),
        ("number :=", all("element_id:=7"), Ordered(&["d7"])),
        ("number greater", all("sequence_number:>12"), Ordered(&["d12", "d6", "d15"])),
        ("number at least", all("sequence_number:>=12"), Ordered(&["d1", "d12", "d6", "d15"])),
        ("number less", all("sequence_number:<3"), Ordered(&["d4", "d7"])),
        ("number at most", all("sequence_number:<=3"), Ordered(&["d4", "d7", "d2"])),
        ("number range", all("element_id:[3..5]"), Ordered(&["d4", "d3", "d5"])),
        ("number list", all("element_id:[1, 9, 12]"), Ordered(&["d9", "d1", "d12"])),
        ("number not equal", all("element_id:!=1 && sequence_number:<4"), Ordered(&["d4", "d7", "d2"])),
        (
            "and binds tighter than or, parentheses group",
            all("element_type:=character || element_type:=section && sequence_number:>10"),
            Ordered(&["d11", "d10", "d12"]),
        ),
        (
            "parentheses",
            all("(element_type:=character || element_type:=section) && sequence_number:>5"),
            Ordered(&["d10", "d5", "d12"]),
        ),
        (
            "a filter applies to text search",
            json!({"q": "door", "query_by": "comment", "filter_by": "element_type:=action", "sort_by": "sequence_number:desc"}),
            Ordered(&["d15", "d6", "d14", "d2"]),
        ),
        (
            "sort by several fields",
            json!({"q": "*", "query_by": "comment", "sort_by": "version_number:desc,element_id:asc", "max_hits": 4}),
            Ordered(&["d1", "d3", "d5", "d7"]),
        ),
        (
            "pages",
            json!({"q": "*", "query_by": "comment", "sort_by": "element_id:asc", "max_hits": 4, "page": 2}),
            Ordered(&["d5", "d6", "d7", "d8"]),
        ),
        (
            "a page past the end is empty",
            json!({"q": "*", "query_by": "comment", "max_hits": 10, "page": 3}),
            Ordered(&[]),
        ),
    ]
}

fn ids(answer: &Value) -> Vec<String> {
    answer["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()).collect()
}

pub async fn load_fixtures(setup: &SearchSetup) {
    let lines: String = fixtures().iter().map(|d| format!("{d}\n")).collect();
    let (status, results) = setup.app.search().import(&setup.service, &lines).await;
    assert_eq!(status, 200, "{results:?}");
    assert!(results.iter().all(|r| r == &json!({"success": true})), "{results:?}");
}

async fn conformance(engine: Engine) {
    let setup = SearchSetup::start(engine).await;
    load_fixtures(&setup).await;
    let search = setup.app.search();
    let user = &setup.admin;
    for (name, request, expect) in cases() {
        let answer = search.search(user, request.clone()).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        let found = ids(&answer.body);
        let (expected, ordered): (Vec<String>, bool) = match expect {
            Expect::Ordered(list) => (list.iter().map(|s| s.to_string()).collect(), true),
            Expect::Set(list) => (list.iter().map(|s| s.to_string()).collect(), false),
        };
        if ordered {
            assert_eq!(found, expected, "{name} ({engine:?})");
        } else {
            let found: BTreeSet<_> = found.into_iter().collect();
            let expected_set: BTreeSet<_> = expected.iter().cloned().collect();
            assert_eq!(found, expected_set, "{name} ({engine:?})");
            assert_eq!(answer.body["found"], json!(expected.len()), "{name} ({engine:?})");
        }
    }

    // Exact matches rank above typo matches: typos are tried only when nothing matches exactly,
    // then with the fewest typos that find anything.
    let answer = search.search(user, json!({"q": "kitchen dooor", "query_by": "comment"})).await.ok();
    let order: Vec<&str> = answer.hits.iter().map(|h| h.document.id.as_str()).collect();
    assert_eq!(order, ["d14"], "one typo in all beats two ({engine:?})");
    let answer = search.search(user, json!({"q": "kitchin", "query_by": "comment"})).await.ok();
    let order: Vec<&str> = answer.hits.iter().map(|h| h.document.id.as_str()).collect();
    assert_eq!(order, ["d15"], "the exact word hides its typo neighbours ({engine:?})");

    // found counts every match, beyond the page.
    let answer = search.search(user, json!({"q": "*", "query_by": "comment", "max_hits": 2})).await.ok();
    assert_eq!((answer.found, answer.hits.len()), (15, 2));

    // Highlights mark the matched words.
    let answer = search
        .search(user, json!({"q": "garden", "query_by": "comment", "filter_by": "element_id:5"}))
        .await
        .ok();
    let highlight = &answer.hits[0].highlights[0];
    assert_eq!(highlight.field, "comment");
    assert!(highlight.snippet.contains("<mark>GARDEN</mark>"), "{highlight:?}");
    assert_eq!(highlight.matched_tokens, ["GARDEN"]);

    // Facets: counts per value among all matches.
    let answer = search
        .search(user, json!({"q": "*", "query_by": "comment", "facet_by": "element_type", "filter_by": "sequence_number:<=10"}))
        .await
        .ok();
    let facets = answer.facet_counts.expect("facet counts");
    let counts: Vec<(String, u64)> = facets[0].counts.iter().map(|c| (c.value.clone(), c.count)).collect();
    let expected: Vec<(String, u64)> =
        [("action", 5), ("character", 2), ("script", 1), ("section", 1), ("spokenWord", 1)]
            .iter()
            .map(|(v, c)| (v.to_string(), *c))
            .collect();
    assert_eq!((facets[0].field_name.as_str(), counts), ("element_type", expected), "{engine:?}");

    sync_get_delete_and_count(&setup).await;
    setup.app.stop().await;
}

/// Sync create/update/delete, get and delete by id and the collection's count, read back at once.
async fn sync_get_delete_and_count(setup: &SearchSetup) {
    let search = setup.app.search();
    let (service, admin) = (&setup.service, &setup.admin);
    let mut document = doc(40, "action", 40, "A lighthouse blinks");
    assert_eq!(
        search.sync(service, "create", &document).await.ok().message,
        "Document synchronized successfully."
    );
    let found = search.search(admin, json!({"q": "lighthouse", "query_by": "comment"})).await.ok();
    assert_eq!(found.found, 1, "a sync is searchable when it answers");
    document["comment"] = json!("A foghorn sounds");
    search.sync(service, "UPDATE", &document).await.ok();
    assert_eq!(search.get(admin, "d40").await.ok().comment, "A foghorn sounds");
    let found = search.search(admin, json!({"q": "lighthouse", "query_by": "comment"})).await.ok();
    assert_eq!(found.found, 0);
    let info = search.collection(admin, "elements").await.ok();
    assert_eq!(info["num_documents"], 16);
    assert_eq!(info["default_sorting_field"], "sequence_number");
    assert_eq!(
        search.sync(service, "delete", &document).await.ok().message,
        "Document deleted successfully."
    );
    assert_eq!(search.get(admin, "d40").await.refusal(), (404, "not_found"));
    // Deleting again still succeeds: a retried delete must not fail.
    search.sync(service, "delete", &document).await.ok();
    assert_eq!(search.delete(admin, "d1").await.ok().message, "Document deleted successfully.");
    assert_eq!(search.delete(admin, "d1").await.refusal(), (404, "not_found"));
    assert_eq!(search.collection(admin, "elements").await.ok()["num_documents"], 14);
    assert_eq!(search.collection(admin, "other").await.refusal(), (404, "not_found"));
    // One id twice in one import: the last line wins and there is one document; an existing
    // document imported again is replaced, not doubled.
    let lines = format!(
        "{}\n{}\n{}\n",
        doc(41, "action", 41, "First take"),
        doc(41, "action", 41, "Second take"),
        doc(2, "action", 2, "Another take")
    );
    let (status, results) = search.import(service, &lines).await;
    assert_eq!((status, results.len()), (200, 3), "{results:?}");
    assert_eq!(search.get(admin, "d41").await.ok().comment, "Second take");
    let found = search.search(admin, json!({"q": "take", "query_by": "comment"})).await.ok();
    let found: BTreeSet<&str> = found.hits.iter().map(|h| h.document.id.as_str()).collect();
    assert_eq!(found, BTreeSet::from(["d2", "d41"]));
    assert_eq!(search.collection(admin, "elements").await.ok()["num_documents"], 15);
}

#[actix_web::test]
async fn embedded() {
    conformance(Engine::Embedded).await
}

#[actix_web::test]
async fn typesense() {
    conformance(Engine::Typesense).await
}
