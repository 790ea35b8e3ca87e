//! Each worker's kept-alive HTTP/1.1 connections to services, over hyper's bare connection API.
//!
//! Why not a shared pool (hyper-util's client, awc): a worker's requests never leave its thread,
//! so a pool of its own needs no lock and hands no request to another task through a channel.
//! Measured with two minimal actix proxies that differ only in this (`bench/upstream-client.sh`):
//! 0.92× against 0.88× of nginx's throughput for hyper-util's shared pool.

use std::cell::{Cell, RefCell};
use std::error::Error as StdError;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;

use super::network::AddressPolicy;
use super::upstream::UpstreamBody;

/// Kept-alive connections unused this long are closed, not reused. Shorter than the keep-alive
/// of the servers behind the gateway (fountain's roles and other actix or Node.js services close
/// idle connections after 5 s): reusing one the service is closing at that moment fails a request
/// that may not be sent again (a POST) with a 502.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections a worker keeps per service instance; more are closed once their exchange
/// ends. Bounds the descriptors a burst leaves open.
const MAX_IDLE_PER_INSTANCE: usize = 256;

/// How sending to a service failed.
#[derive(Debug)]
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

/// What a worker knows of one service instance: where it is and its idle connections.
struct Instance {
    authority: Authority,
    host: HeaderValue,
    /// The path of the instance's URL when it has one (`http://host:port/base`), put before
    /// every request's path.
    base_path: Option<Box<str>>,
    /// A registered instance: its host's addresses are checked against the registry's address
    /// policy whenever a connection is opened (`[peers]` instances are not).
    checked: bool,
    idle: Vec<IdleConnection>,
}

impl Instance {
    fn parse(url: &str, checked: bool) -> Result<Self, SendFailure> {
        let invalid = |why: &str| SendFailure::Connect(format!("the service URL {why}"));
        let parts = url.parse::<Uri>().map_err(|_| invalid("is not a valid URL"))?.into_parts();
        if parts.scheme.as_ref() != Some(&Scheme::HTTP) {
            return Err(invalid("is not an http:// URL"));
        }
        let authority = parts.authority.ok_or_else(|| invalid("names no host"))?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| invalid("has an invalid host"))?;
        let base_path = parts
            .path_and_query
            .map(|p| Box::<str>::from(p.path().trim_end_matches('/')))
            .filter(|p| !p.is_empty());
        Ok(Self { authority, host, base_path, checked, idle: Vec::new() })
    }
}

/// By the instance's base URL. Fx rather than SipHash: the keys come from configuration and
/// the registry, not from clients.
type Instances = FxHashMap<Rc<str>, Instance>;

/// One worker's client for proxied requests (it never leaves its worker thread).
pub struct UpstreamClient {
    instances: Rc<RefCell<Instances>>,
    reaper_started: Cell<bool>,
    policy: std::sync::Arc<AddressPolicy>,
}

impl UpstreamClient {
    pub fn new(policy: std::sync::Arc<AddressPolicy>) -> Self {
        Self { instances: Rc::default(), reaper_started: Cell::new(false), policy }
    }

    /// Sends one request (its URI the path and query) to the instance at `base_url` and waits
    /// for the answer's head. A request that a kept-alive connection refused before any byte of
    /// it was written (the service had just closed that connection) is sent once more on a new
    /// connection.
    pub async fn send(
        &self,
        base_url: &str,
        request: Request<UpstreamBody>,
        connection: Connection,
        timeout: Duration,
    ) -> Result<Response<AnswerBody>, SendFailure> {
        match tokio::time::timeout(timeout, self.exchange(base_url, request, connection)).await {
            Err(_) => Err(SendFailure::Timeout),
            Ok(result) => result,
        }
    }

    async fn exchange(
        &self,
        base_url: &str,
        mut request: Request<UpstreamBody>,
        connection: Connection,
    ) -> Result<Response<AnswerBody>, SendFailure> {
        let (key, authority, checked) = self.address(base_url, &mut request)?;
        let policy = checked.then_some(&*self.policy);
        let kept = match connection {
            Connection::Reuse => self.checkout(&key),
            Connection::New => None,
        };
        let reused = kept.is_some();
        let mut sender = match kept {
            Some(sender) => sender,
            None => connect(&authority, policy).await?,
        };
        let mut failure = match sender.try_send_request(request).await {
            Ok(response) => return Ok(self.recycle_after(key, sender, response)),
            Err(failure) => failure,
        };
        match failure.take_message() {
            Some(unsent) if reused => request = unsent,
            _ if reused && failure.error().is_incomplete_message() => {
                return Err(SendFailure::Dropped(error_chain(failure.error())))
            }
            _ => return Err(SendFailure::Broken(error_chain(failure.error()))),
        }
        sender = connect(&authority, policy).await?;
        match sender.send_request(request).await {
            Ok(response) => Ok(self.recycle_after(key, sender, response)),
            Err(err) => Err(SendFailure::Broken(error_chain(&err))),
        }
    }

    /// Addresses the request to the instance (`Host`, the URL's base path) and names it: its
    /// key among the worker's instances, where to connect and whether its addresses are checked.
    fn address(
        &self,
        base_url: &str,
        request: &mut Request<UpstreamBody>,
    ) -> Result<(Rc<str>, Authority, bool), SendFailure> {
        let mut instances = self.instances.borrow_mut();
        if !instances.contains_key(base_url) {
            let checked = !self.policy.is_configured(base_url);
            instances.insert(Rc::from(base_url), Instance::parse(base_url, checked)?);
        }
        let (key, instance) = instances
            .get_key_value(base_url)
            .ok_or_else(|| SendFailure::Connect("the service instance was forgotten".to_string()))?;
        request.headers_mut().insert(HOST, instance.host.clone());
        if let Some(base_path) = &instance.base_path {
            let target = format!("{base_path}{}", request.uri());
            *request.uri_mut() = target.parse().map_err(|_| {
                SendFailure::Connect("the service URL's path cannot prefix this request".to_string())
            })?;
        }
        Ok((key.clone(), instance.authority.clone(), instance.checked))
    }

    /// The most recently used idle connection to the instance that is still open.
    fn checkout(&self, key: &str) -> Option<SendRequest<UpstreamBody>> {
        self.start_reaper();
        let mut instances = self.instances.borrow_mut();
        let idle = &mut instances.get_mut(key)?.idle;
        while let Some(connection) = idle.pop() {
            if connection.usable() && connection.sender.is_ready() {
                return Some(connection.sender);
            }
        }
        None
    }

    /// The answer, its body holding the connection until it has been read to its end.
    fn recycle_after(
        &self,
        key: Rc<str>,
        sender: SendRequest<UpstreamBody>,
        response: Response<Incoming>,
    ) -> Response<AnswerBody> {
        let recycle = Recycle { sender, key, instances: Rc::downgrade(&self.instances) };
        response.map(|inner| AnswerBody { inner, recycle: Some(recycle) })
    }

    /// Closes idle connections past their time, so that a service no longer called does not keep
    /// the worker's connections (and its own) open forever; an instance left without idle
    /// connections is forgotten (one gone from the registry with them).
    fn start_reaper(&self) {
        if self.reaper_started.replace(true) {
            return;
        }
        let instances: Weak<RefCell<Instances>> = Rc::downgrade(&self.instances);
        actix_web::rt::spawn(async move {
            let mut ticks = actix_web::rt::time::interval(IDLE_TIMEOUT / 2);
            loop {
                ticks.tick().await;
                let Some(instances) = instances.upgrade() else { return };
                instances.borrow_mut().retain(|_, instance| {
                    instance.idle.retain(IdleConnection::usable);
                    !instance.idle.is_empty()
                });
            }
        });
    }
}

/// A connection whose exchange is under way, to be put back among its instance's idle ones.
struct Recycle {
    sender: SendRequest<UpstreamBody>,
    key: Rc<str>,
    instances: Weak<RefCell<Instances>>,
}

impl Recycle {
    /// Back among the idle connections at once if the connection is ready for another request
    /// (usually so once the answer has been read), or when it becomes so. A connection whose
    /// exchange broke off never becomes ready: hyper closes it, and it is dropped.
    fn when_ready(mut self) {
        if self.sender.is_ready() {
            self.put_back();
            return;
        }
        actix_web::rt::spawn(async move {
            if self.sender.ready().await.is_ok() {
                self.put_back();
            }
        });
    }

    fn put_back(self) {
        let Some(instances) = self.instances.upgrade() else { return };
        let mut instances = instances.borrow_mut();
        if let Some(instance) = instances.get_mut(&*self.key) {
            if instance.idle.len() < MAX_IDLE_PER_INSTANCE {
                instance.idle.push(IdleConnection { sender: self.sender, since: Instant::now() });
            }
        }
    }
}

/// A service's answer body on its way to the client. Once it has been read to its end (or is
/// dropped) its connection goes back to the pool: no task per request waits for that.
pub struct AnswerBody {
    inner: Incoming,
    recycle: Option<Recycle>,
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some(recycle) = self.recycle.take() {
                recycle.when_ready();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        if let Some(recycle) = self.recycle.take() {
            recycle.when_ready();
        }
    }
}

/// A new connection to the instance, its driver running beside the worker's other tasks. With
/// a policy (a registered instance), only to addresses the policy allows: the host is resolved
/// and checked here, for the connection, so a name that resolves elsewhere since it was
/// registered is refused.
async fn connect(
    authority: &Authority,
    policy: Option<&AddressPolicy>,
) -> Result<SendRequest<UpstreamBody>, SendFailure> {
    // `[::1]` in a URL is `::1` to the resolver.
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let connected = match policy {
        None => tokio::net::TcpStream::connect((host, port)).await,
        Some(policy) => {
            let addresses = policy
                .resolve(host, port)
                .await
                .map_err(|refused| SendFailure::Connect(format!("not connecting to {host}: {refused}")))?;
            tokio::net::TcpStream::connect(&addresses[..]).await
        }
    };
    let stream = connected.map_err(|err| SendFailure::Connect(format!("tcp connect error: {err}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::gateway::upstream::no_body;

    fn addressed(base_url: &str, target: &str) -> Result<Request<UpstreamBody>, SendFailure> {
        let mut request = Request::new(no_body());
        *request.uri_mut() = Uri::try_from(target).unwrap();
        UpstreamClient::new(Default::default()).address(base_url, &mut request)?;
        Ok(request)
    }

    #[test]
    fn requests_are_addressed_to_the_instance_host_under_its_base_path() {
        let request = addressed("http://svc.internal:8080", "/items?page=2").unwrap();
        assert_eq!(request.uri(), "/items?page=2");
        assert_eq!(request.headers()[HOST], "svc.internal:8080");

        let request = addressed("http://10.0.0.7:9000/base/", "/items?page=2").unwrap();
        assert_eq!(request.uri(), "/base/items?page=2");
        assert_eq!(request.headers()[HOST], "10.0.0.7:9000");
    }

    #[test]
    fn instance_urls_other_than_plain_http_are_refused_before_any_connection() {
        for url in ["https://svc.internal", "svc.internal:8080", "not a url", "http://"] {
            assert!(matches!(addressed(url, "/"), Err(SendFailure::Connect(_))), "{url}");
        }
    }
}
