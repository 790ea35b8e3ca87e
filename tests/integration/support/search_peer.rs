//! A stand-in for search's `POST /documents/sync` on a fixed loopback port, for testing the
//! sequence role's delivery without the search role: it answers as search does (`{message}`,
//! 400 for an unknown operation, 401 without a bearer token), records every document it
//! accepted, and can be told to answer 503 or be stopped and started again on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// One accepted sync call.
#[derive(Debug, Clone)]
pub struct Synced {
    pub operation: String,
    pub document: Value,
    /// The bearer token it came with.
    pub token: String,
}

#[derive(Clone, Default)]
struct Shared {
    accepted: Arc<Mutex<Vec<Synced>>>,
    /// 0: answer as search does; otherwise answer this status to everything.
    forced: Arc<AtomicU16>,
    /// Calls still to be refused with 401 (as search refuses a revoked or expired token).
    refuse_tokens: Arc<AtomicU16>,
    /// A document id whose calls are never answered, and how many such calls arrived.
    hang: Arc<Mutex<Option<String>>>,
    hanging: Arc<AtomicU16>,
}

pub struct SearchPeer {
    pub addr: SocketAddr,
    shared: Shared,
    handle: Option<actix_web::dev::ServerHandle>,
}

impl SearchPeer {
    /// Starts on an ephemeral loopback port.
    pub fn start() -> SearchPeer {
        let shared = Shared::default();
        let (addr, handle) = serve(shared.clone(), "127.0.0.1:0".parse().unwrap());
        SearchPeer { addr, shared, handle: Some(handle) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `status` to every call from now on (0: as search does again).
    pub fn answer(&self, status: u16) {
        self.shared.forced.store(status, Ordering::SeqCst);
    }

    /// Refuses the next `calls` calls with 401, whatever token they carry.
    pub fn refuse_tokens(&self, calls: u16) {
        self.shared.refuse_tokens.store(calls, Ordering::SeqCst);
    }

    /// Never answers calls that carry the document `id` (they hang until the caller gives up).
    pub fn hang_on(&self, id: &str) {
        *self.shared.hang.lock().unwrap() = Some(id.to_string());
    }

    /// How many calls are hanging.
    pub fn hanging(&self) -> u16 {
        self.shared.hanging.load(Ordering::SeqCst)
    }

    /// Stops listening: calls fail to connect.
    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop(false).await;
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        assert!(self.handle.is_none(), "already running");
        let (_, handle) = serve(self.shared.clone(), self.addr);
        self.handle = Some(handle);
    }

    /// Every accepted call, in arrival order.
    pub fn accepted(&self) -> Vec<Synced> {
        self.shared.accepted.lock().unwrap().clone()
    }
}

fn serve(shared: Shared, addr: SocketAddr) -> (SocketAddr, actix_web::dev::ServerHandle) {
    let server = HttpServer::new(move || {
        App::new().app_data(web::Data::new(shared.clone())).route("/documents/sync", web::post().to(sync))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .expect("search peer binds");
    let bound = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (bound, handle)
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"errorCode": code, "message": message, "details": null}))
}

async fn sync(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let forced = shared.forced.load(Ordering::SeqCst);
    if forced != 0 {
        return error(forced, "forced", "answer forced by the test");
    }
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(token) = token else { return error(401, "unauthorized", "a bearer token is required") };
    let refuse = shared.refuse_tokens.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if refuse.is_ok() {
        return error(401, "unauthorized", "the token is not valid");
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "malformed_json", "the request body is not valid JSON");
    };
    let operation = payload["operation"].as_str().unwrap_or_default().to_string();
    if !["create", "update", "delete"].contains(&operation.as_str()) {
        return error(400, "bad_request", "operation must be create, update or delete");
    }
    let document = payload["document"].clone();
    let fields =
        ["id", "element_type", "element_id", "sequence_number", "version_number", "comment", "service_name"];
    if fields.iter().any(|f| document.get(f).is_none()) {
        return error(422, "validation_failed", "document is missing a field");
    }
    let hang = shared.hang.lock().unwrap().clone();
    if hang.is_some_and(|id| document["id"] == id.as_str()) {
        shared.hanging.fetch_add(1, Ordering::SeqCst);
        actix_web::rt::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    shared.accepted.lock().unwrap().push(Synced { operation, document, token });
    HttpResponse::Ok().json(json!({"message": "Document synchronized."}))
}
