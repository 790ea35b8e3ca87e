//! Upstreams the tests control: a small actix server on loopback that a gateway route points to.

use actix_web::dev::ServerHandle;
use actix_web::http::KeepAlive;
use actix_web::{web, App, HttpServer};

/// Serves the routes `configure` sets up on `addr` (`127.0.0.1:0` for any port), with one worker
/// and no signal handling of its own; returns its base URL and the handle that stops it.
pub fn serve<F>(addr: &str, configure: F) -> (String, ServerHandle)
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    serve_with(addr, KeepAlive::default(), configure)
}

/// Like [`serve`], but closes every connection after one answer. For a test that stops the
/// upstream and expects the next request to fail: `ServerHandle::stop` returns before the
/// worker has dropped its open connections, so a kept-alive one could still be answered.
pub fn serve_one_request_per_connection<F>(addr: &str, configure: F) -> (String, ServerHandle)
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    serve_with(addr, KeepAlive::Disabled, configure)
}

fn serve_with<F>(addr: &str, keep_alive: KeepAlive, configure: F) -> (String, ServerHandle)
where
    F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
{
    let server = HttpServer::new(move || App::new().configure(configure.clone()))
        .keep_alive(keep_alive)
        .workers(1)
        .disable_signals()
        .bind(addr)
        .unwrap();
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (url, handle)
}
