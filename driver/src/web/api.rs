//! The JSON API. Its OpenAPI document is generated from these handlers' annotations and served at
//! `/api/openapi.json`; every error is `{"error": "…"}` with a status that says whose fault it
//! was (4xx the request's, 503 the database's, 500 ours).

use super::{ApiError, AppState};
use crate::photos::add::{AddRequest, Owner, PhotoSource, add_faces};
use crate::store::faces::{self, FaceCard};
use crate::store::histories::{self, Refusal, Submission, SubmitError};
use crate::store::{datasets, notify::StatusChange};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use facematch_datasets::DatasetError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use utoipa::{OpenApi, ToSchema};

/// The API's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(health))
        .route("/api/openapi.json", get(openapi))
        .route("/api/photos", post(upload_photo))
        .route("/api/photos/{sha256}", get(photo))
        .route("/api/searches", post(create_search))
        .route("/api/searches/events", get(searches_events))
        .route("/api/searches/{id}", get(search))
        .route("/api/searches/{id}/events", get(search_events))
        .route("/api/stats", get(stats))
        .route("/api/{*rest}", get(unknown).post(unknown))
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "facematch",
        description = "Exact face similarity search over a dataset of face encodings: photos in, \
                       searches queued and answered by the batch engine, results out."
    ),
    paths(
        health,
        upload_photo,
        photo,
        create_search,
        search,
        search_events,
        searches_events,
        stats
    ),
    components(schemas(
        ErrorBody,
        Health,
        PhotoView,
        PhotoFace,
        SearchRequest,
        SearchSubmission,
        SearchCreated,
        SearchesCreated,
        SubmissionCreated,
        SearchView,
        ItemView,
        StatusEvent,
        StatsView,
        SourceCount
    ))
)]
pub struct ApiDoc;

/// What every error answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, and where.
    pub error: String,
}

/// `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or why the database cannot be used.
    pub database: String,
    /// The current dataset version, `name@vN` (None: none registered yet).
    pub dataset: Option<String>,
    /// The schema version applied.
    pub schema: Option<u32>,
}

/// A photo and its faces.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PhotoView {
    /// sha256 of the photo's bytes: its identity.
    pub sha256: String,
    /// Whether it was known before this request (nothing was encoded).
    pub known: bool,
    /// Width in pixels, when recorded.
    pub width: Option<i32>,
    /// Height in pixels, when recorded.
    pub height: Option<i32>,
    /// Its faces.
    pub faces: Vec<PhotoFace>,
}

/// One face of a photo.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PhotoFace {
    /// Face id: what a search asks about.
    pub face_id: i64,
    /// `A` (actor) or `U` (user).
    pub source: String,
    /// `[left, top, right, bottom]` in the photo's pixels.
    pub bbox: Option<Vec<i32>>,
    /// dlib's 128-d encoding.
    pub encoding: Vec<f32>,
}

/// `POST /api/searches`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The query face.
    pub face_id: i64,
    /// `cosine` (default) or `euclidean`.
    #[serde(default = "default_method")]
    pub method: String,
    /// `all` (default), `actor` or `user`.
    #[serde(default = "default_filter")]
    pub filter: String,
    /// N: 1..=1000, default 10.
    #[serde(default = "default_n")]
    pub max_results: u32,
    /// Leave the query face out of its own results (default true).
    #[serde(default = "default_true")]
    pub exclude_self: bool,
    /// Only faces within this euclidean distance.
    #[serde(default)]
    pub max_distance: Option<f64>,
}

fn default_method() -> String {
    "cosine".into()
}
fn default_filter() -> String {
    "all".into()
}
fn default_n() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

/// The body of `POST /api/searches`: one search, or up to [`MAX_BATCH`] queued together (all
/// or none, and answered by the same pass of the engine).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SearchSubmission {
    /// One search.
    One(SearchRequest),
    /// Several, in one transaction.
    Many(Vec<SearchRequest>),
}

/// Most searches one request may queue (and one event stream follow).
pub const MAX_BATCH: usize = 1000;

/// What `POST /api/searches` answers: one search queued, or several.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SubmissionCreated {
    /// For one search.
    One(SearchCreated),
    /// For an array.
    Many(SearchesCreated),
}

/// Searches queued together.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchesCreated {
    /// Each search, in the order asked.
    pub searches: Vec<SearchCreated>,
    /// All their status changes, as one stream of server-sent events.
    pub events: String,
}

/// A search queued.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchCreated {
    /// The history's id.
    pub id: i64,
    /// `PENDING`.
    pub status: String,
    /// Where to read it.
    pub url: String,
    /// Its status changes, as server-sent events.
    pub events: String,
}

/// A search: what was asked, where it is, and its results.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchView {
    /// The history's id.
    pub id: i64,
    /// `PENDING`, `RUNNING`, `FINISHED` or `ERROR`.
    pub status: String,
    /// The query face.
    pub face_id: i64,
    /// Method as stored.
    pub method: String,
    /// Filter as stored.
    pub filter: String,
    /// N as stored.
    pub max_results: i32,
    /// Whether the query face is left out.
    pub exclude_self: bool,
    /// Euclidean distance bound.
    pub max_distance: Option<f64>,
    /// What ran it (runner, dataset, run id), once claimed.
    pub run_params: Option<String>,
    /// Why it failed, on ERROR.
    pub error: Option<String>,
    /// Attempts so far.
    pub attempts: i32,
    /// Submitted (RFC 3339).
    pub created_at: String,
    /// Claimed.
    pub started_at: Option<String>,
    /// Ended.
    pub finished_at: Option<String>,
    /// Results, best first (empty until FINISHED).
    pub items: Vec<ItemView>,
}

/// One matched face.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemView {
    /// 1-based rank.
    pub rank: i32,
    /// Face id.
    pub face_id: i64,
    /// The similarity score (cosine in [-1, 1]; euclidean `1 / (1 + distance)`).
    pub score: f64,
    /// The score as a percentage, negative cosines as 0.
    pub match_percent: f64,
    /// `A` or `U`.
    pub source: Option<String>,
    /// The actor's or user's name.
    pub who: Option<String>,
    /// The photo it was found in.
    pub image_uri: Option<String>,
    /// `[left, top, right, bottom]` in that photo.
    pub bbox: Option<Vec<i32>>,
    /// Its crop (JPEG; an SVG placeholder for a face without a photo).
    pub crop: String,
}

/// One server-sent event of `GET /api/searches/{id}/events` (event name `status`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusEvent {
    /// The history.
    pub id: i64,
    /// Its status now.
    pub status: String,
}

/// `GET /api/stats`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsView {
    /// Faces registered.
    pub faces: i64,
    /// Distinct photos with a face.
    pub images: i64,
    /// Per source.
    pub sources: Vec<SourceCount>,
    /// Histories per status.
    pub histories: std::collections::BTreeMap<String, i64>,
    /// The dataset the mean is over, `name@vN`.
    pub dataset: String,
    /// Faces in it.
    pub dataset_faces: u64,
    /// Component-wise mean encoding, computed in f64.
    pub mean_encoding: Vec<f64>,
}

/// Faces of one source.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SourceCount {
    /// `A` or `U`.
    pub source: String,
    /// Faces.
    pub faces: i64,
    /// Distinct photos.
    pub images: i64,
}

/// The database and the current dataset.
#[utoipa::path(get, path = "/health", responses(
    (status = 200, description = "The database answers", body = Health),
    (status = 503, description = "The database does not answer", body = Health),
))]
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let checked = state
        .blocking(|_, client| {
            let schema = crate::store::applied_schema(client)?;
            let dataset = datasets::resolve(client, None).ok().map(|d| d.label());
            Ok((schema, dataset))
        })
        .await;
    match checked {
        Ok((schema, dataset)) => Json(Health {
            database: "ok".into(),
            dataset,
            schema: Some(schema),
        })
        .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                database: e.message,
                dataset: None,
                schema: None,
            }),
        )
            .into_response(),
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn unknown(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no API endpoint {} (see /api/openapi.json)",
        uri.path()
    ))
}

/// An upload's photo and who its faces belong to, from a multipart form.
pub struct Upload {
    /// The photo.
    pub photo: PhotoSource,
    /// Whose faces they are.
    pub owner: Owner,
}

/// Reads a multipart form with a file field `photo` and an optional `user`. A photo larger than
/// `limit` bytes is a 413 — but only once the whole request has been read, so that the client,
/// still sending, gets the answer instead of a reset connection.
pub async fn read_upload(
    multipart: &mut Multipart,
    limit: usize,
) -> Result<(Option<Upload>, Vec<(String, String)>), ApiError> {
    let mut photo = None;
    let mut user = None;
    let mut fields = Vec::new();
    let mut too_large = false;
    while let Some(mut field) = multipart.next_field().await.map_err(upload_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "photo" {
            let file_name = field.file_name().unwrap_or("upload").to_string();
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(upload_error)? {
                if too_large || bytes.len() + chunk.len() > limit {
                    too_large = true;
                    bytes = Vec::new();
                } else {
                    bytes.extend_from_slice(&chunk);
                }
            }
            if !bytes.is_empty() {
                photo = Some(PhotoSource::Upload {
                    name: file_name,
                    bytes,
                });
            }
        } else {
            let text = field.text().await.map_err(upload_error)?;
            if name == "user" && !text.trim().is_empty() {
                user = Some(text.trim().to_string());
            } else {
                fields.push((name, text));
            }
        }
    }
    if too_large {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "the upload is larger than this server's limit of {} MB (--upload-limit-mb); \
                 nothing was stored",
                limit / (1024 * 1024)
            ),
        });
    }
    let owner = user.map_or(Owner::Anonymous, Owner::User);
    Ok((photo.map(|photo| Upload { photo, owner }), fields))
}

fn upload_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError {
        status: e.status(),
        message: format!("reading the upload: {}", e.body_text()),
    }
}

/// Adds an uploaded photo's faces (nothing is written if it cannot be used) and returns them
/// with their encodings; a photo known by its sha256 is answered without encoding.
pub fn add_upload(
    state: &AppState,
    client: &mut postgres::Client,
    upload: Upload,
) -> Result<PhotoView, ApiError> {
    let images = [upload.photo];
    let request = AddRequest {
        images: &images,
        owner: upload.owner,
        largest: false,
        image_store: &state.options.image_store,
        s3: &state.options.s3,
        prefer_dataset: None,
    };
    let added = {
        let mut encoder = state
            .encoder
            .lock()
            .map_err(|_| ApiError::internal("the encoder lock is poisoned"))?;
        add_faces(client, &request, &mut encoder).map_err(photo_error)?
    };
    let first = added
        .first()
        .ok_or_else(|| ApiError::internal("the photo was added without a face"))?;
    let (known, sha256) = (first.known, first.sha256.clone());
    photo_view(client, &sha256, known)?
        .ok_or_else(|| ApiError::internal(format!("photo {sha256} was added but is not found")))
}

/// A photo that cannot be used is the request's fault (422); the rest is ours.
fn photo_error(e: anyhow::Error) -> ApiError {
    match e.downcast_ref::<DatasetError>() {
        Some(DatasetError::Image { .. }) => ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("{e:#}"),
        },
        _ => ApiError::from(e),
    }
}

fn photo_view(
    client: &mut postgres::Client,
    sha256: &str,
    known: bool,
) -> Result<Option<PhotoView>, ApiError> {
    Ok(
        faces::photo(client, sha256)?.map(|(photo, faces)| PhotoView {
            sha256: photo.sha256,
            known,
            width: photo.width,
            height: photo.height,
            faces: faces
                .into_iter()
                .map(|f| PhotoFace {
                    face_id: f.face_id,
                    source: f.source,
                    bbox: f.bbox,
                    encoding: f.encoding,
                })
                .collect(),
        }),
    )
}

/// Upload a photo (multipart field `photo`; optional `user`: whose faces they are).
#[utoipa::path(post, path = "/api/photos", request_body(content_type = "multipart/form-data", description = "a `photo` file field and an optional `user` text field"), responses(
    (status = 201, description = "A new photo: its faces were encoded and registered", body = PhotoView),
    (status = 200, description = "A photo known by its sha256: its faces as they are", body = PhotoView),
    (status = 400, description = "No photo in the request", body = ErrorBody),
    (status = 413, description = "Larger than the upload limit", body = ErrorBody),
    (status = 422, description = "Not a usable photo (not an image, truncated, too large, no face); nothing was stored", body = ErrorBody),
))]
async fn upload_photo(
    State(state): State<Arc<AppState>>,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let (upload, _) = read_upload(&mut multipart, state.options.upload_limit).await?;
    let upload = upload.ok_or_else(|| {
        ApiError::bad_request("no photo: send the file in a multipart field named `photo`")
    })?;
    let view = state
        .blocking(move |state, client| add_upload(state, client, upload))
        .await?;
    let status = if view.known {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(view)).into_response())
}

/// A known photo's faces and encodings, by the sha256 of its bytes.
#[utoipa::path(get, path = "/api/photos/{sha256}", params(("sha256" = String, Path, description = "hex sha256 of the photo's bytes")), responses(
    (status = 200, body = PhotoView),
    (status = 400, description = "Not a sha256", body = ErrorBody),
    (status = 404, description = "No face has this photo", body = ErrorBody),
))]
async fn photo(
    State(state): State<Arc<AppState>>,
    Path(sha256): Path<String>,
) -> Result<Json<PhotoView>, ApiError> {
    let sha256 = parse_sha256(&sha256)?;
    let view = state
        .blocking(move |_, client| photo_view(client, &sha256, true))
        .await?
        .ok_or_else(|| ApiError::not_found("no photo with this sha256 is known"))?;
    Ok(Json(view))
}

/// A lower-case hex sha256, or a 400 saying what it is not.
pub fn parse_sha256(text: &str) -> Result<String, ApiError> {
    let lower = text.to_ascii_lowercase();
    if lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(lower)
    } else {
        Err(ApiError::bad_request(format!(
            "{text:?} is not a sha256: 64 hex digits expected"
        )))
    }
}

/// A history id from a path, or a 400.
pub fn parse_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{text:?} is not a search id: a positive integer expected"
            ))
        })
}

/// Validates and queues a search; the engine answers it.
pub fn submit(client: &mut postgres::Client, request: &SearchRequest) -> Result<i64, ApiError> {
    submit_all(client, std::slice::from_ref(request)).map(|ids| ids[0])
}

/// Validates and queues searches, all or none, in one statement; their ids in order.
pub fn submit_all(
    client: &mut postgres::Client,
    requests: &[SearchRequest],
) -> Result<Vec<i64>, ApiError> {
    let submissions: Vec<Submission> = requests
        .iter()
        .map(|r| Submission {
            face_id: r.face_id,
            method: r.method.clone(),
            filter: r.filter.clone(),
            max_results: r.max_results,
            exclude_self: r.exclude_self,
            max_distance: r.max_distance,
            user_id: None,
        })
        .collect();
    histories::submit_all(client, &submissions).map_err(|e| match e {
        SubmitError::Refused {
            count: 1, refusal, ..
        } => refusal_error(&refusal, refusal.to_string()),
        SubmitError::Refused { ref refusal, .. } => refusal_error(refusal, e.to_string()),
        SubmitError::Store(e) => e.into(),
    })
}

fn refusal_error(refusal: &Refusal, message: String) -> ApiError {
    match refusal {
        Refusal::NoSuchFace(_) => ApiError::not_found(message),
        Refusal::Invalid(_) => ApiError::bad_request(message),
    }
}

/// Queue a search, or several at once (an array, answered together): the engine claims and
/// answers them at once.
#[utoipa::path(post, path = "/api/searches", request_body = SearchSubmission, responses(
    (status = 201, description = "One search queued (`SearchCreated`), or several (`SearchesCreated`)", body = SubmissionCreated),
    (status = 400, description = "A parameter is invalid (the message names it, and which search of a batch); nothing was queued", body = ErrorBody),
    (status = 404, description = "A query face does not exist; nothing was queued", body = ErrorBody),
))]
async fn create_search(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let not_a_request = |e: serde_json::Error| {
        ApiError::bad_request(format!("the body is not a search request: {e}"))
    };
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(not_a_request)?;
    if !value.is_array() {
        let request: SearchRequest = serde_json::from_value(value).map_err(not_a_request)?;
        let id = state
            .blocking(move |_, client| submit(client, &request))
            .await?;
        return Ok((StatusCode::CREATED, Json(created(id))).into_response());
    }
    let requests: Vec<SearchRequest> = serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(format!("the body is not an array of search requests: {e}"))
    })?;
    if requests.is_empty() || requests.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "{} searches in one request: 1 to {MAX_BATCH} can be queued together",
            requests.len()
        )));
    }
    let ids = state
        .blocking(move |_, client| submit_all(client, &requests))
        .await?;
    let body = SearchesCreated {
        events: format!("/api/searches/events?ids={}", join_ids(&ids)),
        searches: ids.into_iter().map(created).collect(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn created(id: i64) -> SearchCreated {
    SearchCreated {
        id,
        status: "PENDING".into(),
        url: format!("/api/searches/{id}"),
        events: format!("/api/searches/{id}/events"),
    }
}

fn join_ids(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// A search's status, parameters and results.
#[utoipa::path(get, path = "/api/searches/{id}", params(("id" = i64, Path, description = "the history's id")), responses(
    (status = 200, body = SearchView),
    (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
async fn search(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<SearchView>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(
        state
            .blocking(move |_, client| search_view(client, id))
            .await?,
    ))
}

/// The view of history `id`, or a 404.
pub fn search_view(client: &mut postgres::Client, id: i64) -> Result<SearchView, ApiError> {
    Ok(search_with_cards(client, id)?.0)
}

/// [`search_view`] and the cards of its matched faces, by face id (what a crop is cut from).
pub fn search_with_cards(
    client: &mut postgres::Client,
    id: i64,
) -> Result<(SearchView, std::collections::HashMap<i64, FaceCard>), ApiError> {
    let history = histories::find(client, id)?
        .ok_or_else(|| ApiError::not_found(format!("search {id} does not exist")))?;
    let ids: Vec<i64> = history.items.iter().map(|i| i.face_id).collect();
    let cards: std::collections::HashMap<i64, FaceCard> = faces::cards(client, &ids)?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339();
    let view = SearchView {
        id,
        status: history.status,
        face_id: history.in_face_id,
        method: history.similarity_method,
        filter: history.face_source_filter,
        max_results: history.max_results,
        exclude_self: history.exclude_self,
        max_distance: history.max_distance,
        run_params: history.run_params,
        error: history.output,
        attempts: history.attempts,
        created_at: time(history.created_at),
        started_at: history.started_at.map(time),
        finished_at: history.finished_at.map(time),
        items: history
            .items
            .into_iter()
            .map(|item| {
                let card = cards.get(&item.face_id);
                ItemView {
                    rank: item.rank,
                    face_id: item.face_id,
                    score: item.score,
                    match_percent: match_percent(item.score),
                    source: item.source,
                    who: card.and_then(|c| c.who.clone()),
                    image_uri: card.and_then(|c| c.image_uri.clone()),
                    bbox: card.and_then(|c| c.bbox.clone()),
                    crop: format!("/faces/{}/crop", item.face_id),
                }
            })
            .collect(),
    };
    Ok((view, cards))
}

/// A score as a percentage: both methods score in (0, 1] for faces that look alike at all.
pub fn match_percent(score: f64) -> f64 {
    (score.clamp(0.0, 1.0) * 1000.0).round() / 10.0
}

/// How often an event stream waiting for a change looks whether the server is stopping.
const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Server-sent events: the search's status now, then each change, ending after FINISHED or
/// ERROR.
#[utoipa::path(get, path = "/api/searches/{id}/events", params(("id" = i64, Path, description = "the history's id")), responses(
    (status = 200, description = "`text/event-stream` of `status` events", body = StatusEvent, content_type = "text/event-stream"),
    (status = 404, body = ErrorBody),
))]
async fn search_events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    status_stream(state, vec![id]).await
}

/// Query of `GET /api/searches/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct EventsQuery {
    /// The histories' ids, separated by commas (at most 1000).
    ids: String,
}

/// Server-sent events of several searches (a batch queued together): each one's status now,
/// then every change of any of them, ending once all are FINISHED or ERROR.
#[utoipa::path(get, path = "/api/searches/events", params(EventsQuery), responses(
    (status = 200, description = "`text/event-stream` of `status` events", body = StatusEvent, content_type = "text/event-stream"),
    (status = 400, body = ErrorBody),
    (status = 404, description = "A search does not exist (the message names it)", body = ErrorBody),
))]
async fn searches_events(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let ids: Vec<i64> = query
        .ids
        .split(',')
        .map(|id| parse_id(id.trim()))
        .collect::<Result<_, _>>()?;
    if ids.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "{} ids: one stream follows at most {MAX_BATCH}",
            ids.len()
        )));
    }
    status_stream(state, ids).await
}

/// The status of `ids` now, then each change, until all are final. Subscribed before the
/// statuses are read, so a change in between is not missed; a notification older than what was
/// already sent for its history (committed before the read, delivered after it) is dropped, by
/// the order of [`StatusChange::order`].
async fn status_stream(state: Arc<AppState>, ids: Vec<i64>) -> Result<Response, ApiError> {
    let changes = state.events.subscribe();
    let wanted = ids.clone();
    let now = state
        .blocking(move |_, client| Ok(histories::statuses(client, &wanted)?))
        .await?;
    if let Some(missing) = ids.iter().find(|id| !now.contains_key(id)) {
        return Err(ApiError::not_found(format!(
            "search {missing} does not exist"
        )));
    }
    // Per history still going: the order of the last change sent.
    let open: HashMap<i64, (i32, u8)> = now
        .values()
        .filter(|c| !super::events::is_final(&c.status))
        .map(|c| (c.id, c.order()))
        .collect();
    let first: VecDeque<StatusChange> = ids.iter().map(|id| now[id].clone()).collect();
    let stream = futures_util::stream::unfold(
        (first, changes, open),
        |(mut pending, mut changes, mut open)| async move {
            let change = match pending.pop_front() {
                Some(change) => change,
                None => loop {
                    if open.is_empty() {
                        return None;
                    }
                    // A server asked to stop ends its streams (the browser reconnects to the
                    // next one): graceful shutdown waits for every open connection.
                    if crate::signals::stop_requested() {
                        return None;
                    }
                    match tokio::time::timeout(STOP_CHECK, changes.recv()).await {
                        Err(_) => continue,
                        Ok(Ok(change)) => match open.get_mut(&change.id) {
                            Some(last) if change.order() > *last => {
                                *last = change.order();
                                break change;
                            }
                            _ => continue,
                        },
                        // Fell behind the hub: end, and the client's reconnection reads the
                        // statuses afresh.
                        Ok(Err(_)) => return None,
                    }
                },
            };
            if super::events::is_final(&change.status) {
                open.remove(&change.id);
            }
            let event = Event::default()
                .event("status")
                .json_data(StatusEvent {
                    id: change.id,
                    status: change.status,
                })
                .unwrap_or_else(|_| Event::default().event("status"));
            Some((Ok::<_, Infallible>(event), (pending, changes, open)))
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Faces and photos per source, histories per status, and the mean encoding of the current
/// dataset (computed once per version).
#[utoipa::path(get, path = "/api/stats", responses(
    (status = 200, body = StatsView),
    (status = 404, description = "No dataset is registered yet", body = ErrorBody),
))]
async fn stats(State(state): State<Arc<AppState>>) -> Result<Json<StatsView>, ApiError> {
    let stats = state.blocking(state_stats).await?;
    Ok(Json(StatsView {
        faces: stats.faces,
        images: stats.images,
        sources: stats
            .sources
            .iter()
            .map(|s| SourceCount {
                source: s.source.clone(),
                faces: s.faces,
                images: s.images,
            })
            .collect(),
        histories: stats.histories.iter().cloned().collect(),
        dataset: stats.dataset.clone(),
        dataset_faces: stats.dataset_faces,
        mean_encoding: stats.mean_encoding.clone(),
    }))
}

/// The figures of `facematch stats`, the mean reused while the current version stays the same
/// (the counts are read each time).
pub fn state_stats(
    state: &AppState,
    client: &mut postgres::Client,
) -> Result<Arc<crate::output::stats::Stats>, ApiError> {
    let dataset =
        datasets::resolve(client, None).map_err(|e| ApiError::not_found(format!("{e:#}")))?;
    let label = dataset.label();
    let cached = state.stats.lock().ok().and_then(|slot| {
        slot.as_ref()
            .filter(|(l, _)| *l == label)
            .map(|(_, s)| s.clone())
    });
    let stats = match cached {
        Some(previous) => Arc::new(crate::output::stats::recount(client, &previous)?),
        None => Arc::new(crate::output::stats::collect(
            client,
            &dataset,
            &state.options.s3,
        )?),
    };
    if let Ok(mut slot) = state.stats.lock() {
        *slot = Some((label, stats.clone()));
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_endpoint() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/health",
            "/api/photos",
            "/api/photos/{sha256}",
            "/api/searches",
            "/api/searches/{id}",
            "/api/searches/{id}/events",
            "/api/searches/events",
            "/api/stats",
        ] {
            assert!(
                paths.contains_key(path),
                "{path} missing from {:?}",
                paths.keys()
            );
        }
        assert!(doc["components"]["schemas"]["SearchView"].is_object());
    }

    #[test]
    fn ids_and_hashes_are_checked() {
        assert_eq!(parse_id("12").unwrap(), 12);
        for bad in ["0", "-1", "x", "1.5", "../etc"] {
            assert_eq!(
                parse_id(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        let sha = "A".repeat(64);
        assert_eq!(parse_sha256(&sha).unwrap(), "a".repeat(64));
        assert!(parse_sha256("../../etc/passwd").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
        assert_eq!(match_percent(0.8765), 87.7);
        assert_eq!(match_percent(-0.3), 0.0);
    }
}
