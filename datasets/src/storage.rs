//! Where dataset files live: a local folder (`/abs/path`, `file:///abs/path`) or S3 (`s3://bucket/prefix`).
//!
//! The API is synchronous because its callers are timely worker threads and the sync Postgres client;
//! S3 calls run on one shared tokio runtime owned by this module.

use crate::error::{DatasetError, Result};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use backon::Retryable;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::runtime::Runtime;

/// How to reach S3 (all optional: the standard AWS chain fills in the rest).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct S3Options {
    /// Custom endpoint for S3-compatible servers (`AWS_ENDPOINT_URL` is honoured too).
    pub endpoint: Option<String>,
    /// Region; falls back to the AWS chain, then `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`); implied by a custom endpoint.
    pub path_style: bool,
}

/// Where a local write goes before it is renamed into place: a hidden name beside the key
/// (`list` skips dot-files, so a reader listing the folder never sees a write in progress), the
/// whole file name kept, so keys that differ only after their last dot never share one.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ))
}

/// A dataset storage root.
#[derive(Clone)]
pub struct Storage {
    root_uri: String,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Local(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("facematch-s3")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime for S3")
    })
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.root_uri)
    }
}

impl Storage {
    /// Opens a storage root from a URI: `s3://bucket/prefix`, `file:///abs/path` or a plain path.
    pub fn open(uri: &str, s3: &S3Options) -> Result<Storage> {
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(DatasetError::Invalid(format!("no bucket in {uri:?}")));
            }
            let prefix = prefix.trim_matches('/').to_string();
            let client = s3_client(s3);
            let root_uri = if prefix.is_empty() {
                format!("s3://{bucket}")
            } else {
                format!("s3://{bucket}/{prefix}")
            };
            return Ok(Storage {
                root_uri,
                backend: Backend::S3 {
                    client,
                    bucket: bucket.to_string(),
                    prefix,
                },
            });
        }
        if uri.contains("://") && !uri.starts_with("file://") {
            return Err(DatasetError::Invalid(format!(
                "unsupported storage URI {uri:?} (use s3://bucket/prefix, file:///path or a path)"
            )));
        }
        let path = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
        let path = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map_err(|e| DatasetError::Invalid(format!("current directory: {e}")))?
                .join(path)
        };
        // `a/../b` and symlinks resolved, so the same folder always has the same URI.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        Ok(Storage {
            root_uri: format!("file://{}", path.display()),
            backend: Backend::Local(path),
        })
    }

    /// The root URI in canonical form (`file:///abs` or `s3://bucket/prefix`).
    pub fn root_uri(&self) -> &str {
        &self.root_uri
    }

    /// The full URI of a key under this root (for messages and the database).
    pub fn uri_of(&self, key: &str) -> String {
        format!("{}/{}", self.root_uri, key)
    }

    fn local_path(root: &Path, key: &str) -> Result<PathBuf> {
        // An absolute key would be joined as is (`root.join("/etc/x")` is `/etc/x`).
        if key.starts_with('/') || key.split('/').any(|c| c == "..") {
            return Err(DatasetError::Invalid(format!(
                "key {key:?} escapes the root"
            )));
        }
        Ok(root.join(key))
    }

    fn s3_key(prefix: &str, key: &str) -> String {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}/{key}")
        }
    }

    fn fail(&self, key: &str, message: impl ToString) -> DatasetError {
        DatasetError::Storage {
            uri: self.uri_of(key),
            message: message.to_string(),
        }
    }

    /// An S3 call that failed after the SDK's retries: still transient (the service or the
    /// network), or permanent (the request: not found, access denied, bad input).
    fn sdk_fail<E: std::error::Error + 'static>(
        &self,
        key: &str,
        error: &SdkError<E, HttpResponse>,
    ) -> DatasetError {
        let message = describe_sdk_error(error);
        if is_transient(error) {
            DatasetError::Unavailable {
                uri: self.uri_of(key),
                message,
            }
        } else {
            self.fail(key, message)
        }
    }

    /// Reads a whole object into memory (a user's photo may change while it is read).
    pub fn get(&self, key: &str) -> Result<Bytes> {
        match &self.backend {
            Backend::Local(root) => std::fs::read(Self::local_path(root, key)?)
                .map(Bytes::from)
                .map_err(|e| self.fail(key, e)),
            Backend::S3 { .. } => self.get_immutable(key),
        }
    }

    /// Reads a whole object that nobody changes in place — a dataset version's shard —
    /// mapping a local file instead of copying it.
    pub fn get_immutable(&self, key: &str) -> Result<Bytes> {
        match &self.backend {
            Backend::Local(root) => {
                map_file(&Self::local_path(root, key)?).map_err(|e| self.fail(key, e))
            }
            Backend::S3 {
                client,
                bucket,
                prefix,
            } => {
                runtime().block_on(async {
                    // Err((error, true)): the body was cut short, worth fetching again.
                    let fetch = || async {
                        let object = client
                            .get_object()
                            .bucket(bucket)
                            .key(Self::s3_key(prefix, key))
                            .send()
                            .await
                            .map_err(|e| (self.sdk_fail(key, &e), false))?;
                        // A body cut short fails here, after the SDK's own retries are over.
                        let body = object.body.collect().await.map_err(|e| {
                            let error = DatasetError::Unavailable {
                                uri: self.uri_of(key),
                                message: format!("the body was cut short: {}", describe_error(&e)),
                            };
                            (error, true)
                        })?;
                        Ok(body.into_bytes())
                    };
                    fetch
                        .retry(body_retries())
                        // Only the body: the SDK has already retried the request itself.
                        .when(|(_, body_cut_short)| *body_cut_short)
                        .notify(|(e, _), after| tracing::debug!("retrying in {after:?}: {e}"))
                        .await
                        .map_err(|(error, _)| error)
                })
            }
        }
    }

    /// Writes a whole object (atomically for local files: a reader never sees half a file).
    pub fn put(&self, key: &str, data: Bytes) -> Result<()> {
        match &self.backend {
            Backend::Local(root) => {
                let path = Self::local_path(root, key)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| self.fail(key, e))?;
                }
                let tmp = temporary_path(&path);
                let written =
                    std::fs::write(&tmp, &data).and_then(|()| std::fs::rename(&tmp, &path));
                written.map_err(|e| {
                    // A full disk, a quota: leave nothing behind, not even the folder.
                    let _ = std::fs::remove_file(&tmp);
                    prune_empty_dirs(root, &path);
                    self.fail(key, e)
                })
            }
            Backend::S3 {
                client,
                bucket,
                prefix,
            } => runtime().block_on(async {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(Self::s3_key(prefix, key))
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .map_err(|e| self.sdk_fail(key, &e))?;
                Ok(())
            }),
        }
    }

    /// Whether an object exists.
    pub fn exists(&self, key: &str) -> Result<bool> {
        match &self.backend {
            Backend::Local(root) => Ok(Self::local_path(root, key)?.is_file()),
            Backend::S3 {
                client,
                bucket,
                prefix,
            } => runtime().block_on(async {
                match client
                    .head_object()
                    .bucket(bucket)
                    .key(Self::s3_key(prefix, key))
                    .send()
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
                    Err(e) => Err(self.sdk_fail(key, &e)),
                }
            }),
        }
    }

    /// Deletes an object (missing objects are not an error).
    pub fn delete(&self, key: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(root) => {
                let path = Self::local_path(root, key)?;
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.fail(key, e)),
                    _ => {
                        prune_empty_dirs(root, &path);
                        Ok(())
                    }
                }
            }
            Backend::S3 {
                client,
                bucket,
                prefix,
            } => runtime().block_on(async {
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(Self::s3_key(prefix, key))
                    .send()
                    .await
                    .map_err(|e| self.sdk_fail(key, &e))?;
                Ok(())
            }),
        }
    }
}

impl Storage {
    /// Every key under `prefix` (relative to the root, `""` for all), sorted. Local folders are
    /// walked recursively, skipping hidden entries; S3 is listed page by page.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = match &self.backend {
            Backend::Local(root) => {
                let start = Self::local_path(root, prefix.trim_end_matches('/'))?;
                let mut keys = Vec::new();
                let mut stack = vec![start];
                while let Some(dir) = stack.pop() {
                    let entries = match std::fs::read_dir(&dir) {
                        Ok(entries) => entries,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(self.fail(&dir.display().to_string(), e)),
                    };
                    for entry in entries {
                        let entry = entry.map_err(|e| self.fail(prefix, e))?;
                        let path = entry.path();
                        if entry.file_name().to_string_lossy().starts_with('.') {
                            continue;
                        }
                        let kind = entry.file_type().map_err(|e| self.fail(prefix, e))?;
                        if kind.is_dir() {
                            stack.push(path);
                        } else if let Ok(relative) = path.strip_prefix(root) {
                            keys.push(relative.to_string_lossy().into_owned());
                        }
                    }
                }
                keys
            }
            Backend::S3 {
                client,
                bucket,
                prefix: root_prefix,
            } => runtime().block_on(async {
                let full = Self::s3_key(root_prefix, prefix);
                let mut keys = Vec::new();
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(full)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| self.sdk_fail(prefix, &e))?;
                    for object in page.contents() {
                        let Some(key) = object.key() else { continue };
                        let relative = if root_prefix.is_empty() {
                            key
                        } else {
                            key.strip_prefix(root_prefix.as_str())
                                .map(|k| k.trim_start_matches('/'))
                                .unwrap_or(key)
                        };
                        keys.push(relative.to_string());
                    }
                }
                Ok::<_, DatasetError>(keys)
            })?,
        };
        keys.sort();
        Ok(keys)
    }
}

/// Attempts of one S3 request, the SDK's standard retries with exponential backoff and jitter
/// (5xx, throttling, timeouts, dropped connections): enough that a storage answering one request
/// in five with an error is still read completely.
const S3_ATTEMPTS: u32 = 10;

/// Retries of a whole GetObject whose body was cut short (the SDK retries requests, not bodies).
fn body_retries() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(6)
        .with_jitter()
}

/// Whether an S3 failure is the service's or the network's (worth a later attempt).
fn is_transient<E>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500 || status == 429 || status == 408
        }
        _ => false,
    }
}

fn s3_client(options: &S3Options) -> aws_sdk_s3::Client {
    let endpoint = options
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.is_empty());
    let region = options.region.clone();
    let shared = runtime().block_on(async {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(S3_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(50))
                    .with_max_backoff(Duration::from_secs(2)),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        loader.load().await
    });
    let mut builder = aws_sdk_s3::config::Builder::from(&shared);
    if shared.region().is_none() {
        builder = builder.region(aws_config::Region::new("us-east-1"));
    }
    if let Some(endpoint) = &endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    builder = builder.force_path_style(options.path_style || endpoint.is_some());
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// An error with its causes, one after another.
fn describe_error(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The SDK's Display for errors is just "service error"; the chain names the actual cause.
fn describe_sdk_error<E: std::error::Error + 'static>(error: &E) -> String {
    describe_error(error)
}

/// Folders exist only to hold objects, as on S3: drops the ones above `path` left empty, up to
/// (not including) `root`.
fn prune_empty_dirs(root: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| d.starts_with(root) && *d != root) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// A local file's bytes, mapped rather than copied: a shard is read once, so copying it through
/// a fresh buffer only costs page faults and a memcpy.
fn map_file(path: &std::path::Path) -> std::io::Result<Bytes> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new()); // an empty mapping is an error on Linux
    }
    // SAFETY: only a dataset version's files are mapped (`get_immutable`), and facematch never
    // changes a file in place: `put` writes a new file and renames it over the old one, and a
    // version's files are immutable, so the mapped bytes do not change while they are read (an
    // unlinked file stays mapped). Only an outside process truncating the file could break
    // that; files facematch does not own (photos) are read, never mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(map))
}

#[cfg(test)]
mod temporary_path_tests {
    use super::*;

    #[test]
    fn writes_in_progress_are_hidden_and_never_shared() {
        let dir = tempfile::tempdir().unwrap();
        let a = temporary_path(&dir.path().join("peers/127.0.0.1_4000-7"));
        let b = temporary_path(&dir.path().join("peers/127.0.0.1_4001-7"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(dir.path().join("peers").as_path()));
        assert!(a.file_name().unwrap().to_string_lossy().starts_with('.'));
        // A listing made while such a file exists shows only finished keys.
        let storage = Storage::open(dir.path().to_str().unwrap(), &S3Options::default()).unwrap();
        storage.put("peers/done", Bytes::from_static(b"x")).unwrap();
        std::fs::write(&a, b"half").unwrap();
        assert_eq!(storage.list("peers/").unwrap(), ["peers/done"]);
    }
}
