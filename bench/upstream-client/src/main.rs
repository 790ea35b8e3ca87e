//! `upstream-client-bench <awc|hyper|hyper-conn> <workers> <listen port> <upstream base URL>`:
//! forwards every request's path to the upstream and streams the answer back, nothing else.
//! `hyper` is hyper-util's pooled client (one pool shared behind a lock, connections driven by
//! spawned tasks); `hyper-conn` is hyper's bare HTTP/1.1 connections in a pool of the worker's
//! own, without lock or cross-thread hand-off.

use std::cell::RefCell;

use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type HyperClient = Client<HttpConnector, Empty<Bytes>>;
type Connection = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

thread_local! {
    /// The worker's idle connections to the upstream.
    static IDLE: RefCell<Vec<Connection>> = const { RefCell::new(Vec::new()) };
}

struct Upstream(String);

async fn through_awc(client: web::Data<awc::Client>, up: web::Data<Upstream>, req: HttpRequest) -> HttpResponse {
    let url = format!("{}{}", up.0, req.uri().path());
    match client.request(req.method().clone(), url).no_decompress().send().await {
        Ok(response) => HttpResponse::build(response.status()).streaming(response),
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

async fn through_hyper(client: web::Data<HyperClient>, up: web::Data<Upstream>, req: HttpRequest) -> HttpResponse {
    let Ok(uri) = format!("{}{}", up.0, req.uri().path()).parse::<hyper::Uri>() else {
        return HttpResponse::BadRequest().finish();
    };
    relay(client.get(uri).await)
}

/// hyper's answer (or failure) as actix's, the body streamed through.
fn relay<E>(response: Result<hyper::Response<hyper::body::Incoming>, E>) -> HttpResponse {
    match response {
        Ok(response) => {
            let status = actix_web::http::StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            let body = response.into_body().into_data_stream().map(|chunk| chunk.map_err(actix_web::error::ErrorBadGateway));
            HttpResponse::build(status).streaming(body)
        }
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

/// An idle connection of the worker's, or a new one.
async fn checkout(authority: &str) -> Option<Connection> {
    while let Some(connection) = IDLE.with(|idle| idle.borrow_mut().pop()) {
        if connection.is_ready() {
            return Some(connection);
        }
    }
    let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (connection, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    actix_web::rt::spawn(async move {
        let _ = driver.await;
    });
    Some(connection)
}

async fn through_hyper_conn(up: web::Data<Upstream>, req: HttpRequest) -> HttpResponse {
    let authority = up.0.trim_start_matches("http://");
    let Some(mut connection) = checkout(authority).await else {
        return HttpResponse::BadGateway().finish();
    };
    let request = hyper::Request::get(req.uri().path())
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new());
    let Ok(request) = request else { return HttpResponse::BadRequest().finish() };
    let response = connection.send_request(request).await;
    // Back to the idle list once the answer has been read through.
    actix_web::rt::spawn(async move {
        if connection.ready().await.is_ok() {
            IDLE.with(|idle| idle.borrow_mut().push(connection));
        }
    });
    relay(response)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, client, workers, port, upstream] = args.as_slice() else {
        eprintln!("usage: upstream-client-bench <awc|hyper|hyper-conn> <workers> <listen port> <upstream base URL>");
        std::process::exit(2);
    };
    let (client, upstream) = (client.clone(), upstream.trim_end_matches('/').to_string());
    let workers: usize = workers.parse().expect("workers is a number");
    let port: u16 = port.parse().expect("port is a number");
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let app = App::new().app_data(web::Data::new(Upstream(upstream.clone())));
            if client == "awc" {
                app.app_data(web::Data::new(awc::Client::default())).default_service(web::to(through_awc))
            } else if client == "hyper-conn" {
                app.default_service(web::to(through_hyper_conn))
            } else {
                let hyper_client: HyperClient = Client::builder(TokioExecutor::new()).build_http();
                app.app_data(web::Data::new(hyper_client)).default_service(web::to(through_hyper))
            }
        })
        .workers(workers)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
