//! A webhook receiver on an ephemeral port that records what it gets and can be told to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

use super::eventually;

pub struct Subscriber {
    pub url: String,
    pub received: Arc<Mutex<Vec<(actix_web::http::header::HeaderMap, String)>>>,
    pub failing: Arc<AtomicBool>,
    pub handle: actix_web::dev::ServerHandle,
}

impl Subscriber {
    pub fn start() -> Subscriber {
        let received = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let (r, f) = (received.clone(), failing.clone());
        let server = HttpServer::new(move || {
            let (r, f) = (r.clone(), f.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: String| {
                let (r, f) = (r.clone(), f.clone());
                async move {
                    r.lock().unwrap().push((req.headers().clone(), body));
                    if f.load(Ordering::SeqCst) {
                        HttpResponse::ServiceUnavailable().finish()
                    } else {
                        HttpResponse::NoContent().finish()
                    }
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Subscriber { url: format!("http://{addr}/hook"), received, failing, handle }
    }

    /// Answer 503 to every delivery from now on (or, with false, 204 again).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn bodies_for(&self, topic: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_str::<Value>(body).unwrap())
            .filter(|b| b["topic"] == topic)
            .collect()
    }

    /// Waits (bounded) until at least `count` deliveries of `topic` arrived; returns them all.
    pub async fn wait_for(&self, topic: &str, count: usize) -> Vec<Value> {
        eventually(format!("{count} deliveries of {topic}"), Duration::from_secs(20), async || {
            Some(self.bodies_for(topic)).filter(|got| got.len() >= count)
        })
        .await
    }
}
