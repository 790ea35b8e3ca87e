//! The bodies of a proxied exchange: the client's upload streamed to the service with
//! back-pressure, and the service's answer streamed back to the client. (The connections they
//! travel over are `pool`'s.)

use std::cell::Cell;
use std::rc::Rc;

use actix_web::body::SizedStream;
use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use futures_util::StreamExt;
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Either, Empty};

use super::limits::Allowance;
use super::pool::AnswerBody;

/// A request body on its way to a service: none, or the client's upload as it arrives.
pub type UpstreamBody = Either<Empty<Bytes>, Channel<Bytes, UploadError>>;
/// Chunks of an upload buffered between the client and the service: enough to keep both sides
/// busy, few enough that a slow service slows the client down instead of filling memory.
const UPLOAD_BUFFER_CHUNKS: usize = 4;

const RATELIMIT_LIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: header::HeaderName = header::HeaderName::from_static("ratelimit-remaining");

/// Headers of the service's answer that describe its hop only.
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Why an upload stopped before the service had all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("the request body is over the gateway's limit")]
    TooLarge,
    #[error("the client's upload broke off")]
    ClientFailed,
}

/// What became of the client's upload; read once the service's answer (or failure) is in.
#[derive(Clone, Default)]
pub struct UploadOutcome(Rc<Cell<Option<UploadError>>>);

impl UploadOutcome {
    pub fn failure(&self) -> Option<UploadError> {
        self.0.get()
    }
}

/// Streams the client's body to the service as it arrives, stopping at `limit` bytes. The
/// pump runs beside the request on the worker (the client's payload cannot leave its thread);
/// it ends when the upload does, or as soon as the service side stops reading.
pub fn stream_upload(mut payload: web::Payload, limit: u64) -> (UpstreamBody, UploadOutcome) {
    let (mut sender, body) = Channel::new(UPLOAD_BUFFER_CHUNKS);
    let outcome = UploadOutcome::default();
    let seen = outcome.clone();
    actix_web::rt::spawn(async move {
        let mut received: u64 = 0;
        while let Some(chunk) = payload.next().await {
            let failure = match chunk {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    if received <= limit {
                        if sender.send_data(chunk).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    UploadError::TooLarge
                }
                Err(_) => UploadError::ClientFailed,
            };
            seen.0.set(Some(failure));
            sender.abort(failure);
            return;
        }
    });
    (Either::Right(body), outcome)
}

pub fn no_body() -> UpstreamBody {
    Either::Left(Empty::new())
}

/// The service's answer for the client: its status and headers (minus hop-by-hop ones) and its
/// body streamed through, with the service's `Content-Length` when it gave one, chunked
/// otherwise.
pub fn relay(response: hyper::Response<AnswerBody>, allowance: Option<Allowance>) -> HttpResponse {
    let (head, body) = response.into_parts();
    let status = StatusCode::from_u16(head.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    // A HEAD answer declares the length a GET body would have; actix writes it and no body.
    let may_declare_length =
        !status.is_informational() && status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED;
    let length = may_declare_length
        .then(|| head.headers.get(hyper::header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok())
        .flatten();
    let mut reply = HttpResponse::build(status);
    for (name, value) in &head.headers {
        if DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let converted = (
            header::HeaderName::from_bytes(name.as_str().as_bytes()),
            header::HeaderValue::from_bytes(value.as_bytes()),
        );
        if let (Ok(name), Ok(value)) = converted {
            reply.append_header((name, value));
        }
    }
    if let Some(allowance) = allowance {
        reply.insert_header((RATELIMIT_LIMIT, header::HeaderValue::from(allowance.limit)));
        reply.insert_header((RATELIMIT_REMAINING, header::HeaderValue::from(allowance.remaining)));
    }
    let body = body.into_data_stream();
    match length {
        Some(length) => reply.body(SizedStream::new(length, body)),
        // Headers first: `streaming` adds a default content type only when the service sent none.
        None => reply.streaming(body),
    }
}
