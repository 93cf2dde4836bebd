//! `facematch serve` (feature `web`): the pages people open and the JSON API applications call,
//! over the same engine as the batch commands (README: Web app and API).
//!
//! One process holds three things:
//!
//! - **the engine**: a thread running [`crate::batch::watch`] with a
//!   [`ResidentRunner`](crate::runner::resident::ResidentRunner): every PENDING history — from a
//!   page, the API or an application's INSERT — is claimed, run and finished by the code of
//!   `facematch run`, over the dataset held in memory;
//! - **the status hub** ([`events`]): one LISTEN connection fanning the schema's status
//!   notifications out to the server-sent event streams of the pages that follow a search;
//! - **the HTTP server**: axum on tokio. Handlers are async, but the store is the synchronous
//!   Postgres client and dlib is synchronous: each handler does its work in a blocking task with
//!   a pooled connection ([`AppState::blocking`]).
//!
//! Nothing a client sends names a file: crops and photos are looked up by face id or sha256,
//! and their location comes from the database ([`crops`]).

pub mod api;
pub mod crops;
pub mod events;
pub mod pages;
pub mod report;
pub mod templates;

use crate::batch::RunOptions;
use crate::photos::add::LazyEncoder;
use crate::runner::resident::ResidentRunner;
use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use facematch_datasets::S3Options;
use facematch_datasets::face::Encoder;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What loads dlib's models.
pub type EncoderLoader = Box<dyn FnMut() -> Result<Encoder> + Send>;

/// What `facematch serve` was asked.
pub struct ServeOptions {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The bearer token every request must carry (required unless `bind` is a loopback address).
    pub token: Option<String>,
    /// Largest upload accepted, in bytes.
    pub upload_limit: usize,
    /// The database.
    pub database_url: String,
    /// Where uploaded photos are kept.
    pub image_store: String,
    /// How to reach S3 (datasets, photos, the image store).
    pub s3: S3Options,
    /// How often the engine looks for work without a notification.
    pub poll: Duration,
}

/// Checks that the server may listen where it was asked: anywhere but a loopback address it
/// must be given a token, since the pages and the API would be open to the network.
pub fn check_exposure(bind: &SocketAddr, token: Option<&str>) -> Result<()> {
    if !bind.ip().is_loopback() && token.is_none_or(str::is_empty) {
        bail!(
            "refusing to listen on {bind} without a token: the pages and the API would be open to \
             anyone who can reach it; pass --token (or set FACEMATCH_TOKEN), or bind 127.0.0.1"
        );
    }
    Ok(())
}

/// Everything a handler needs.
pub struct AppState {
    options: ServeOptions,
    pool: r2d2::Pool<Connections>,
    /// Loaded at the first upload that needs it; dlib's models are not `Sync`.
    encoder: Mutex<LazyEncoder<EncoderLoader>>,
    crops: crops::Crops,
    events: events::Hub,
    templates: templates::Templates,
    stats: Mutex<Option<(String, Arc<crate::output::stats::Stats>)>>,
}

impl AppState {
    /// Runs `work` on a pooled connection in a blocking task (the store is synchronous).
    pub async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&AppState, &mut postgres::Client) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut client = state
                .pool
                .get()
                .map_err(|e| ApiError::unavailable(format!("no database connection: {e}")))?;
            work(&state, &mut client)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
    }
}

/// Opens the store's connections for the pool (schema checked, as every writing command does).
#[derive(Debug)]
struct Connections {
    url: String,
}

impl r2d2::ManageConnection for Connections {
    type Connection = postgres::Client;
    type Error = StoreError;

    fn connect(&self) -> Result<postgres::Client, StoreError> {
        crate::store::connect_checked(&self.url, crate::store::Access::Write).map_err(StoreError)
    }

    fn is_valid(&self, client: &mut postgres::Client) -> Result<(), StoreError> {
        client
            .simple_query("")
            .map(drop)
            .map_err(|e| StoreError(e.into()))
    }

    fn has_broken(&self, client: &mut postgres::Client) -> bool {
        client.is_closed()
    }
}

/// A connection the pool could not make.
#[derive(Debug)]
pub struct StoreError(anyhow::Error);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// An error a request ends with: its status and a message that says what was wrong. The API
/// answers it as `{"error": "…"}`, pages as a page.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What was wrong.
    pub message: String,
}

impl ApiError {
    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
    /// 503: the database (or another dependency) is out of reach.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
        }
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

/// Store and pipeline errors reaching a handler are the server's (500), unless a handler
/// classified them first.
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::internal(format!("{e:#}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// The cookie a browser keeps the token in, once it opened a page with `?token=…`.
const TOKEN_COOKIE: &str = "facematch_token";

/// Lets a request through when no token is set, or when it carries it: as a bearer token, or in
/// the cookie a page set.
async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = state.options.token.as_deref() else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" || carries_token(request.headers(), token) {
        return next.run(request).await;
    }
    // A page opened with ?token=… stores it in a cookie and reloads without it.
    if let Some(given) = query_token(request.uri().query())
        && constant_time_eq(given.as_bytes(), token.as_bytes())
    {
        let path = request.uri().path().to_string();
        return (
            StatusCode::SEE_OTHER,
            [
                (
                    header::SET_COOKIE,
                    format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
                ),
                (header::LOCATION, path),
            ],
        )
            .into_response();
    }
    let mut response = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "this server needs its token: send `Authorization: Bearer <token>`, or open a \
                  page once with ?token=<token>"
            .into(),
    }
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer".parse().expect("a valid header"),
    );
    response
}

/// Whether the headers carry `token` as a bearer token or in the token cookie.
fn carries_token(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "));
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='));
    bearer
        .chain(cookies)
        .any(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// The `token` parameter of a query string.
fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.strip_prefix("token="))
        .map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
        .next()
}

/// Compares without stopping at the first difference, so the time taken says nothing about
/// how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The application: every route, the token check and the upload limit.
pub fn router(state: Arc<AppState>) -> Router {
    // Uploads past the limit are read to their end and refused (`api::read_upload`); a
    // request twice as large, plus room for the form, is cut off unread.
    let limit = state
        .options
        .upload_limit
        .saturating_mul(2)
        .saturating_add(1 << 20);
    Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        // After the merge: it applies to the routes that exist when it is called.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// A known path asked with a method it does not take: JSON for the API, a page otherwise.
async fn method_not_allowed(
    State(state): State<Arc<AppState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let error = ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!(
            "{} does not take {method} (see /api/openapi.json)",
            uri.path()
        ),
    };
    if uri.path().starts_with("/api/") || uri.path() == "/health" {
        error.into_response()
    } else {
        pages::error_page(&state, error)
    }
}

/// Serves until SIGTERM or SIGINT: the engine thread, the status hub and the HTTP server.
/// `encoder` loads dlib's models (at the first upload that needs them); `ready` hears the
/// address once the server listens.
pub fn serve(
    options: ServeOptions,
    encoder: EncoderLoader,
    runner: ResidentRunner,
    run_options: RunOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    check_exposure(&options.bind, options.token.as_deref())?;
    crate::signals::install();
    let pool = r2d2::Pool::builder()
        .max_size(8)
        .min_idle(Some(1))
        // A round trip per request only to learn what the next query would: a connection the
        // server closed is dropped by `has_broken`, and the request that met it says so.
        .test_on_check_out(false)
        .connection_timeout(Duration::from_secs(10))
        .build(Connections {
            url: options.database_url.clone(),
        })
        .with_context(|| {
            format!(
                "connecting to {}",
                crate::store::redact(&options.database_url)
            )
        })?;
    let events = events::Hub::start(&options.database_url)?;
    let engine = {
        let (url, poll) = (options.database_url.clone(), options.poll);
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                let mut report = |event: crate::batch::watch::WatchEvent<'_>| {
                    use crate::batch::watch::WatchEvent;
                    match event {
                        WatchEvent::Ready { dataset } => {
                            tracing::info!(?dataset, "engine ready")
                        }
                        WatchEvent::Ran(summary) => tracing::info!(
                            run = summary.run_id,
                            claimed = summary.claimed,
                            finished = summary.finished,
                            errored = summary.errored,
                            scan_ms = summary.scan_ms,
                            "ran"
                        ),
                        WatchEvent::Failed(e) => tracing::warn!("engine: {e:#}"),
                    }
                };
                crate::batch::watch::watch(
                    &url,
                    &runner,
                    &run_options,
                    poll,
                    &crate::signals::stop_requested,
                    &mut report,
                )
            })
            .context("starting the engine thread")?
    };
    let state = Arc::new(AppState {
        options,
        pool,
        encoder: Mutex::new(LazyEncoder::new(encoder)),
        crops: crops::Crops::new(),
        events,
        templates: templates::Templates::new()?,
        stats: Mutex::new(None),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(state.options.bind)
            .await
            .with_context(|| format!("listening on {}", state.options.bind))?;
        ready(listener.local_addr()?);
        // No Nagle: an event stream writes small frames, and each one after the first would
        // otherwise wait for the client's delayed ACK (40 ms on Linux) before it leaves.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
        });
        axum::serve(listener, router(state.clone()))
            .with_graceful_shutdown(async {
                while !crate::signals::stop_requested() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
            .context("serving HTTP")
    });
    // The engine hears the same stop request; its run in progress finishes first.
    let engine = engine
        .join()
        .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    served.and(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_binds_go_without_a_token() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let open: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_exposure(&local, None).is_ok());
        assert!(check_exposure(&"[::1]:8080".parse().unwrap(), None).is_ok());
        let refused = check_exposure(&open, None).unwrap_err().to_string();
        assert!(refused.contains("--token"), "{refused}");
        assert!(check_exposure(&open, Some("")).is_err());
        assert!(check_exposure(&open, Some("s3cret")).is_ok());
    }

    #[test]
    fn tokens_are_read_from_bearer_headers_and_the_cookie() {
        let mut headers = HeaderMap::new();
        assert!(!carries_token(&headers, "abc"));
        headers.insert(header::AUTHORIZATION, "Bearer abd".parse().unwrap());
        assert!(!carries_token(&headers, "abc"));
        headers.insert(header::COOKIE, "x=1; facematch_token=abc".parse().unwrap());
        assert!(carries_token(&headers, "abc"));
        assert_eq!(query_token(Some("a=1&token=x%2By")).as_deref(), Some("x+y"));
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"sam"));
    }
}
