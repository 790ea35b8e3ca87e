//! notify: publish → webhook received latency with 10 subscribers at a fixed publish rate.
//! The real role host runs in-process (SQLite in a temp dir, or BENCH_DATABASE_URL), the
//! subscribers are actix servers on loopback. Run: `cargo bench --bench notify_latency`
//! (BENCH_RATE events/s, default 1000; BENCH_SECONDS, default 10; BENCH_SUBSCRIBERS, default 10).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use fountain::app::Application;
use fountain::config::{Config, Overrides};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn main() {
    actix_web::rt::System::new().block_on(run());
}

async fn run() {
    let rate = env_or("BENCH_RATE", 1000);
    let seconds = env_or("BENCH_SECONDS", 10);
    let subscribers = env_or("BENCH_SUBSCRIBERS", 10) as usize;
    let dir = tempfile::tempdir().expect("temp dir");
    let overrides = Overrides { file: None, data_dir: Some(dir.path().join("data")) };
    let mut config = Config::load_from(&overrides, figment::providers::Env::prefixed("FOUNTAIN_BENCH_NONE_"))
        .expect("config");
    if let Ok(url) = std::env::var("BENCH_DATABASE_URL") {
        config.database.url = url;
    }
    config.log.level = "warn".into();
    config.set_role_setting("kms", "bcrypt_cost", 4);
    config.database.pool_size = 16;
    for role in ["kms", "notify"] {
        config.roles.entry(role.into()).or_default().port = Some(0);
    }
    let roles: Vec<_> = ["kms", "notify"].iter().filter_map(|r| fountain::roles::find(r)).collect();
    let host = Application::build(config, &roles, None).await.expect("roles start");
    let platform = host.platform().clone();
    fountain::roles::kms::create_user_offline(&platform, "bench", "bench password 1234", &["admin".into()])
        .expect("admin");
    let kms = format!("http://{}", host.addr("kms").expect("kms"));
    let notify = format!("http://{}", host.addr("notify").expect("notify"));
    let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut login = client
        .post(format!("{kms}/login"))
        .send_json(&serde_json::json!({"username": "bench", "password": "bench password 1234"}))
        .await
        .expect("login");
    let session: serde_json::Value = login.json().await.expect("token");
    let token = format!("Bearer {}", session["access_token"].as_str().expect("access token"));

    // Subscribers record (publish time, receive time) from each delivery.
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..subscribers {
        let sink = latencies.clone();
        let server = HttpServer::new(move || {
            let sink = sink.clone();
            App::new().default_service(web::to(move |body: web::Json<serde_json::Value>| {
                let sink = sink.clone();
                async move {
                    let sent = body["payload"]["sentMicros"].as_u64().unwrap_or(0);
                    sink.lock().unwrap().push(now_micros().saturating_sub(sent));
                    HttpResponse::NoContent().finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind subscriber");
        let url = format!("http://{}/hook", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        let created = client
            .post(format!("{notify}/subscriptions"))
            .insert_header(("authorization", token.clone()))
            .send_json(&serde_json::json!({"topics": ["bench.tick"], "callbackUrl": url}))
            .await
            .expect("subscribe");
        assert_eq!(created.status().as_u16(), 201);
    }

    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut published = 0u64;
    let mut in_flight = Vec::new();
    while published < total {
        let due = started + interval * published as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            actix_web::rt::time::sleep(wait).await;
        }
        let request = client
            .post(format!("{notify}/events"))
            .insert_header(("authorization", token.clone()))
            .send_json(&serde_json::json!({"topic": "bench.tick", "payload": {"sentMicros": now_micros()}}));
        in_flight.push(actix_web::rt::spawn(async move { request.await.map(|r| r.status().as_u16()) }));
        published += 1;
    }
    let mut accepted = 0;
    for task in in_flight {
        if let Ok(Ok(202)) = task.await {
            accepted += 1;
        }
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    let expected = accepted as usize * subscribers;
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.lock().unwrap().len() < expected && Instant::now() < deadline {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let all_seconds = started.elapsed().as_secs_f64();
    let mut samples = latencies.lock().unwrap().clone();
    samples.sort_unstable();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "notify_latency: {accepted} events published at {:.0}/s to {subscribers} subscribers; {} of {expected} deliveries \
         received in {all_seconds:.1}s ({:.0} deliveries/s); publish→webhook p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        accepted as f64 / publish_seconds,
        samples.len(),
        samples.len() as f64 / all_seconds,
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        samples.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    host.stop(false).await;
}
