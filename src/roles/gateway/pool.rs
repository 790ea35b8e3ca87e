//! Each worker's kept-alive HTTP/1.1 connections to services, over hyper's bare connection API.
//!
//! Why not a shared pool (hyper-util's client, awc): a worker's requests never leave its thread,
//! so a pool of its own needs no lock and hands no request to another task through a channel.
//! Measured with two minimal actix proxies that differ only in this (`bench/upstream-client.sh`):
//! 0.92× against 0.88× of nginx's throughput for hyper-util's shared pool.

use std::cell::{Cell, RefCell};
use std::error::Error as StdError;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;

use super::upstream::UpstreamBody;

/// Kept-alive connections unused this long are closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections a worker keeps per service instance; more are closed once their exchange
/// ends. Bounds the descriptors a burst leaves open.
const MAX_IDLE_PER_INSTANCE: usize = 256;

/// How sending to a service failed.
pub enum SendFailure {
    /// No connection could be opened: nothing reached the service.
    Connect(String),
    /// No answer within the upstream timeout.
    Timeout,
    /// A kept-alive connection closed after the request went out and before any answer: the
    /// service most likely closed it as idle just then (and never read the request), but it
    /// may have acted on it. Only a request that may be repeated should be sent again.
    Dropped(String),
    /// The exchange broke after it began.
    Broken(String),
}

/// Whether a request may go over a kept-alive connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// The most recently used idle connection, or a new one.
    Reuse,
    /// A new connection (for a request sent again after `SendFailure::Dropped`).
    New,
}

struct IdleConnection {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

impl IdleConnection {
    fn usable(&self) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < IDLE_TIMEOUT
    }
}

/// By the instance's authority (`host:port`, as its URL spells it). Fx rather than SipHash: the
/// keys come from configuration and the registry, and `Authority`'s own hash feeds the hasher
/// one byte at a time.
type IdleConnections = FxHashMap<Box<str>, Vec<IdleConnection>>;

/// One worker's client for proxied requests (it never leaves its worker thread).
#[derive(Default)]
pub struct UpstreamClient {
    idle: Rc<RefCell<IdleConnections>>,
    reaper_started: Cell<bool>,
}

impl UpstreamClient {
    /// Sends one request (absolute URI, plain http) and waits for the answer's head. A request
    /// that a kept-alive connection refused before any byte of it was written (the service had
    /// just closed that connection) is sent once more on a new connection.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
        connection: Connection,
        timeout: Duration,
    ) -> Result<Response<Incoming>, SendFailure> {
        match tokio::time::timeout(timeout, self.exchange(request, connection)).await {
            Err(_) => Err(SendFailure::Timeout),
            Ok(result) => result,
        }
    }

    async fn exchange(
        &self,
        request: Request<UpstreamBody>,
        connection: Connection,
    ) -> Result<Response<Incoming>, SendFailure> {
        let (authority, mut request) = origin_form(request)?;
        let kept = match connection {
            Connection::Reuse => self.checkout(&authority),
            Connection::New => None,
        };
        let reused = kept.is_some();
        let mut sender = match kept {
            Some(sender) => sender,
            None => connect(&authority).await?,
        };
        let mut failure = match sender.try_send_request(request).await {
            Ok(response) => return Ok(self.recycle_after(authority, sender, response)),
            Err(failure) => failure,
        };
        match failure.take_message() {
            Some(unsent) if reused => request = unsent,
            _ if reused && failure.error().is_incomplete_message() => {
                return Err(SendFailure::Dropped(error_chain(failure.error())))
            }
            _ => return Err(SendFailure::Broken(error_chain(failure.error()))),
        }
        sender = connect(&authority).await?;
        match sender.send_request(request).await {
            Ok(response) => Ok(self.recycle_after(authority, sender, response)),
            Err(err) => Err(SendFailure::Broken(error_chain(&err))),
        }
    }

    /// The most recently used idle connection to `authority` that is still open.
    fn checkout(&self, authority: &Authority) -> Option<SendRequest<UpstreamBody>> {
        self.start_reaper();
        let mut idle = self.idle.borrow_mut();
        let connections = idle.get_mut(authority.as_str())?;
        while let Some(connection) = connections.pop() {
            if connection.usable() && connection.sender.is_ready() {
                return Some(connection.sender);
            }
        }
        None
    }

    /// Puts the connection back among the idle ones once this exchange is over (the answer read
    /// to its end, the upload sent); a connection whose exchange broke off is closed instead.
    fn recycle_after(
        &self,
        authority: Authority,
        mut sender: SendRequest<UpstreamBody>,
        response: Response<Incoming>,
    ) -> Response<Incoming> {
        let idle = Rc::downgrade(&self.idle);
        actix_web::rt::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let Some(idle) = idle.upgrade() else { return };
            let mut idle = idle.borrow_mut();
            let connections = match idle.get_mut(authority.as_str()) {
                Some(connections) => connections,
                None => idle.entry(authority.as_str().into()).or_default(),
            };
            if connections.len() < MAX_IDLE_PER_INSTANCE {
                connections.push(IdleConnection { sender, since: Instant::now() });
            }
        });
        response
    }

    /// Closes idle connections past their time, so that a service no longer called does not keep
    /// the worker's connections (and its own) open forever.
    fn start_reaper(&self) {
        if self.reaper_started.replace(true) {
            return;
        }
        let idle: Weak<RefCell<IdleConnections>> = Rc::downgrade(&self.idle);
        actix_web::rt::spawn(async move {
            let mut ticks = actix_web::rt::time::interval(IDLE_TIMEOUT / 2);
            loop {
                ticks.tick().await;
                let Some(idle) = idle.upgrade() else { return };
                idle.borrow_mut().retain(|_, connections| {
                    connections.retain(IdleConnection::usable);
                    !connections.is_empty()
                });
            }
        });
    }
}

/// The request rewritten for the wire: origin-form target (`/path?query`) and `Host` from the
/// absolute URI it was built with, which names the instance to connect to.
fn origin_form(
    mut request: Request<UpstreamBody>,
) -> Result<(Authority, Request<UpstreamBody>), SendFailure> {
    let parts = std::mem::take(request.uri_mut()).into_parts();
    if parts.scheme.as_ref() != Some(&Scheme::HTTP) {
        return Err(SendFailure::Connect("only http:// service URLs can be proxied".to_string()));
    }
    let authority =
        parts.authority.ok_or_else(|| SendFailure::Connect("the service URL names no host".to_string()))?;
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|_| SendFailure::Connect("the service URL's host is not a valid header".to_string()))?;
    request.headers_mut().insert(HOST, host);
    *request.uri_mut() = parts.path_and_query.map_or_else(|| Uri::from_static("/"), Uri::from);
    Ok((authority, request))
}

/// A new connection to the instance, its driver running beside the worker's other tasks.
async fn connect(authority: &Authority) -> Result<SendRequest<UpstreamBody>, SendFailure> {
    // `[::1]` in a URL is `::1` to the resolver.
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|err| SendFailure::Connect(format!("tcp connect error: {err}")))?;
    stream.set_nodelay(true).map_err(|err| SendFailure::Connect(format!("tcp nodelay: {err}")))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| SendFailure::Connect(error_chain(&err)))?;
    actix_web::rt::spawn(async move {
        // Its failures reach the exchange that was under way; an idle connection closed by the
        // service just ends here.
        let _ = connection.await;
    });
    Ok(sender)
}

/// "connection closed before message completed: …" with every cause, for the log.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
