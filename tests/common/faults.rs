//! A fault-injecting layer in front of s3s-fs: a configurable share of requests is answered with
//! 500 InternalError or 503 SlowDown, has its connection dropped without an answer, or (a
//! GetObject) gets its body cut short after the headers promised all of it — what a real S3
//! endpoint or the network in between does on a bad day.

use http_body_util::BodyExt;
use hyper::body::Bytes;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The kinds of fault, in the order [`Faults::injected`] counts them.
pub const KINDS: [&str; 4] = [
    "500 InternalError",
    "503 SlowDown",
    "dropped connection",
    "body cut short",
];

/// How often, and which, faults to inject; shared with the server's connections.
#[derive(Default)]
pub struct Faults {
    /// Faulty requests per thousand.
    per_mille: AtomicU32,
    state: AtomicU64,
    injected: [AtomicU64; 4],
    requests: AtomicU64,
    /// Only requests whose path contains this are faulted (all when `None`).
    target: std::sync::Mutex<Option<String>>,
}

/// What to do with one request.
enum Fault {
    Status(u16, &'static str, &'static str),
    Drop,
    Truncate,
}

impl Faults {
    /// Sets the share of faulty requests, in per mille (0: none, 1000: all).
    pub fn set_per_mille(&self, per_mille: u32) {
        self.per_mille.store(per_mille.min(1000), Ordering::SeqCst);
    }

    /// Faults only requests whose path contains `part` (e.g. `shard-`), or all with `None`.
    pub fn set_target(&self, part: Option<&str>) {
        if let Ok(mut target) = self.target.lock() {
            *target = part.map(str::to_string);
        }
    }

    /// Faults injected so far, by kind ([`KINDS`]).
    pub fn injected(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.injected[i].load(Ordering::SeqCst))
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// A xorshift draw: deterministic enough to reason about, no shared RNG needed.
    fn draw(&self) -> u64 {
        let mut x = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 30;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    fn pick(&self, path: &str, is_get: bool) -> Option<Fault> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let targeted = match self.target.lock() {
            Ok(target) => target.as_deref().is_none_or(|part| path.contains(part)),
            Err(_) => true,
        };
        if !targeted {
            return None;
        }
        let roll = self.draw();
        if (roll % 1000) as u32 >= self.per_mille.load(Ordering::SeqCst) {
            return None;
        }
        let kind = ((roll / 1000) % 4) as usize;
        // Only a GetObject has a body worth cutting; the others get a SlowDown instead.
        let kind = if kind == 3 && !is_get { 1 } else { kind };
        self.injected[kind].fetch_add(1, Ordering::SeqCst);
        Some(match kind {
            0 => Fault::Status(
                500,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ),
            1 => Fault::Status(503, "SlowDown", "Please reduce your request rate."),
            2 => Fault::Drop,
            _ => Fault::Truncate,
        })
    }
}

type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Answers `request` through `service`, or with the fault `faults` picks.
pub async fn serve(
    faults: std::sync::Arc<Faults>,
    service: s3s::service::S3Service,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<s3s::Body>, Error> {
    let is_get = request.method() == http::Method::GET
        && !request.uri().query().unwrap_or("").contains("list-type");
    let path = request.uri().path().to_string();
    match faults.pick(&path, is_get) {
        None => Ok(hyper::service::Service::call(&service, request).await?),
        Some(Fault::Status(status, code, message)) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
                 <Message>{message}</Message></Error>"
            );
            Ok(http::Response::builder()
                .status(status)
                .header("content-type", "application/xml")
                .body(s3s::Body::from(xml))?)
        }
        // An error from the service makes hyper close the connection without an answer.
        Some(Fault::Drop) => Err("fault injected: connection dropped".into()),
        Some(Fault::Truncate) => {
            let response = hyper::service::Service::call(&service, request).await?;
            let (parts, body) = response.into_parts();
            let full: Bytes = body.collect().await?.to_bytes();
            if !parts.status.is_success() || full.len() < 2 {
                return Ok(http::Response::from_parts(parts, s3s::Body::from(full)));
            }
            // The headers promise every byte; half of them come, then the connection ends.
            let half = full.slice(..full.len() / 2);
            let stream = futures_util::stream::iter([
                Ok::<_, Error>(hyper::body::Frame::data(half)),
                Err::<hyper::body::Frame<Bytes>, Error>("fault injected: body cut short".into()),
            ]);
            Ok(http::Response::from_parts(
                parts,
                s3s::Body::http_body_unsync(http_body_util::StreamBody::new(stream)),
            ))
        }
    }
}
