//! The pages: search by photo or face, a search followed live and its grid of matched faces, a
//! photo's faces to pick from, past searches, datasets; and the crops and photo views they show.

use super::api::{self, SearchRequest, Upload};
use super::{ApiError, AppState, crops, templates};
use crate::store::{datasets, faces, histories};
use axum::Router;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Searches per page of the list.
const PAGE_SIZE: i64 = 25;

/// The pages' routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/search", post(start_search))
        .route("/searches", get(searches))
        .route("/searches/{id}", get(search))
        .route("/photos/{sha256}", get(photo))
        .route("/photos/{sha256}/view", get(photo_view))
        .route("/datasets", get(datasets_page))
        .route("/faces/{id}/crop", get(crop))
        .route(
            "/static/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], templates::CSS) }),
        )
        .route(
            "/static/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], templates::JS) }),
        )
        .fallback(not_found)
}

/// A page, or the error page saying what went wrong.
fn page(state: &AppState, name: &str, context: impl Serialize) -> Response {
    match state.templates.render(name, context) {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(state, ApiError::from(e)),
    }
}

/// The error page, with the error's status.
pub(super) fn error_page(state: &AppState, error: ApiError) -> Response {
    let html = state
        .templates
        .render(
            "error.html",
            minijinja::context! { message => &error.message },
        )
        .unwrap_or_else(|_| error.message.clone());
    (error.status, Html(html)).into_response()
}

async fn not_found(State(state): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    error_page(
        &state,
        ApiError::not_found(format!("there is no page {}", uri.path())),
    )
}

/// The search form's parameters, as the form sends them.
#[derive(Debug, Clone, Serialize)]
struct FormParams {
    method: String,
    filter: String,
    max_results: String,
    max_distance: Option<String>,
}

impl FormParams {
    fn from_fields(fields: &HashMap<String, String>) -> FormParams {
        let field = |name: &str, default: &str| {
            fields
                .get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        FormParams {
            method: field("method", "cosine"),
            filter: field("filter", "all"),
            max_results: field("max_results", "10"),
            max_distance: Some(field("max_distance", "")).filter(|v| !v.is_empty()),
        }
    }

    /// The search these parameters ask for `face_id`, or what is wrong with them.
    fn request(&self, face_id: i64) -> Result<SearchRequest, ApiError> {
        let max_results = self.max_results.parse::<u32>().map_err(|_| {
            ApiError::bad_request(format!(
                "N must be a number from 1 to 1000, not {:?}",
                self.max_results
            ))
        })?;
        let max_distance = self
            .max_distance
            .as_deref()
            .map(|d| {
                d.parse::<f64>().map_err(|_| {
                    ApiError::bad_request(format!("the max distance must be a number, not {d:?}"))
                })
            })
            .transpose()?;
        Ok(SearchRequest {
            face_id,
            method: self.method.clone(),
            filter: self.filter.clone(),
            max_results,
            exclude_self: true,
            max_distance,
        })
    }

    fn query_string(&self) -> String {
        let mut pairs = vec![
            ("method", self.method.as_str()),
            ("filter", self.filter.as_str()),
            ("max_results", self.max_results.as_str()),
        ];
        if let Some(d) = &self.max_distance {
            pairs.push(("max_distance", d));
        }
        pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// A history line as the tables show it.
#[derive(Serialize)]
struct Line {
    #[serde(flatten)]
    line: histories::HistoryLine,
    created: String,
}

fn lines(lines: Vec<histories::HistoryLine>) -> Vec<Line> {
    lines
        .into_iter()
        .map(|line| Line {
            created: line.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            line,
        })
        .collect()
}

async fn index(State(state): State<Arc<AppState>>) -> Response {
    let loaded = state
        .blocking(|_, client| {
            let dataset = datasets::resolve(client, None).ok().map(|d| d.label());
            let (recent, _) = histories::page(client, None, 10)?;
            Ok((dataset, recent))
        })
        .await;
    match loaded {
        Ok((dataset, recent)) => page(
            &state,
            "index.html",
            minijinja::context! {
                dataset, recent => lines(recent),
                params => FormParams::from_fields(&HashMap::new()),
            },
        ),
        Err(e) => error_page(&state, e),
    }
}

/// The form: a face id, or a photo (one face: searched at once; several: picked on its page).
async fn start_search(State(state): State<Arc<AppState>>, mut multipart: Multipart) -> Response {
    let (upload, fields) = match api::read_upload(&mut multipart, state.options.upload_limit).await
    {
        Ok(read) => read,
        Err(e) => return error_page(&state, e),
    };
    let fields: HashMap<String, String> = fields.into_iter().collect();
    let params = FormParams::from_fields(&fields);
    let face_id = fields
        .get("face_id")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let started = state
        .blocking(move |state, client| start(state, client, upload, face_id, params))
        .await;
    match started {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) => error_page(&state, e),
    }
}

/// Where the browser goes next: the new search's page, or the photo's page to pick a face.
fn start(
    state: &AppState,
    client: &mut postgres::Client,
    upload: Option<Upload>,
    face_id: Option<String>,
    params: FormParams,
) -> Result<String, ApiError> {
    let face_id = match (face_id, upload) {
        (Some(id), _) => id
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("{id:?} is not a face id")))?,
        (None, Some(upload)) => {
            let photo = api::add_upload(state, client, upload)?;
            match photo.faces.as_slice() {
                [only] => only.face_id,
                _ => {
                    return Ok(format!(
                        "/photos/{}?{}",
                        photo.sha256,
                        params.query_string()
                    ));
                }
            }
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "choose a photo to upload, or give a known face id",
            ));
        }
    };
    let id = api::submit(client, &params.request(face_id)?)?;
    Ok(format!("/searches/{id}"))
}

async fn searches(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let before = match query.get("before").map(|b| api::parse_id(b)).transpose() {
        Ok(before) => before,
        Err(e) => return error_page(&state, e),
    };
    let loaded = state
        .blocking(move |_, client| Ok(histories::page(client, before, PAGE_SIZE)?))
        .await;
    match loaded {
        Ok((recent, total)) => {
            let older = (recent.len() as i64 == PAGE_SIZE)
                .then(|| recent.last().map(|h| h.id))
                .flatten();
            page(
                &state,
                "searches.html",
                minijinja::context! { recent => lines(recent), total, older, newer => before.is_some() },
            )
        }
        Err(e) => error_page(&state, e),
    }
}

/// A matched face as its card shows it (on a search page and in a report).
#[derive(Serialize)]
pub(super) struct Card {
    #[serde(flatten)]
    item: api::ItemView,
    score_text: String,
    /// The last segment of the photo's location.
    photo: Option<String>,
}

impl Card {
    pub(super) fn of(item: api::ItemView) -> Card {
        Card {
            score_text: format!("{:.4}", item.score),
            photo: item
                .image_uri
                .as_deref()
                .map(|u| u.rsplit('/').next().unwrap_or(u).to_string()),
            item,
        }
    }
}

async fn search(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = match api::parse_id(&id) {
        Ok(id) => id,
        Err(e) => return error_page(&state, e),
    };
    let loaded = state
        .blocking(move |_, client| {
            let view = api::search_view(client, id)?;
            let query = faces::cards(client, &[view.face_id])?.into_iter().next();
            Ok((view, query))
        })
        .await;
    match loaded {
        Ok((mut view, query)) => {
            let cards: Vec<Card> = std::mem::take(&mut view.items)
                .into_iter()
                .map(Card::of)
                .collect();
            let s = minijinja::context! {
                cards,
                query_crop => format!("/faces/{}/crop", view.face_id),
                query_who => query.as_ref().and_then(|c| c.who.clone()),
                query_photo => query.and_then(|c| c.image_uri),
                ..minijinja::Value::from_serialize(&view)
            };
            page(&state, "search.html", minijinja::context! { s })
        }
        Err(e) => error_page(&state, e),
    }
}

/// A face's box on the photo, in percent of its size.
#[derive(Serialize)]
struct BoxOnPhoto {
    face_id: i64,
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

async fn photo(
    State(state): State<Arc<AppState>>,
    Path(sha256): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let sha256 = match api::parse_sha256(&sha256) {
        Ok(sha) => sha,
        Err(e) => return error_page(&state, e),
    };
    let params = FormParams::from_fields(&query);
    let wanted = sha256.clone();
    let loaded = state
        .blocking(move |state, client| {
            let (photo, uri, faces) = kept_photo(client, &wanted)?;
            // The size a build or an upload recorded; decoded only for a photo without one.
            let (w, h) = match (photo.width, photo.height) {
                (Some(w), Some(h)) if w > 0 && h > 0 => (w as u32, h as u32),
                _ => state.crops.view(&uri, &wanted, &state.options.s3)?.1,
            };
            let percent =
                |v: i32, of: u32| (f64::from(v) * 100.0 / f64::from(of.max(1))).clamp(0.0, 100.0);
            Ok(faces
                .into_iter()
                .filter_map(|f| match f.bbox.as_deref() {
                    Some(&[l, t, r, b]) => Some(BoxOnPhoto {
                        face_id: f.face_id,
                        left: percent(l, w),
                        top: percent(t, h),
                        width: percent(r - l, w),
                        height: percent(b - t, h),
                    }),
                    _ => None,
                })
                .collect::<Vec<_>>())
        })
        .await;
    match loaded {
        Ok(boxes) => page(
            &state,
            "photo.html",
            minijinja::context! { sha256, faces => boxes, params },
        ),
        Err(e) => error_page(&state, e),
    }
}

/// A known photo, where it is kept, and its faces; a 404 for an unknown one or one whose
/// faces were imported without it.
fn kept_photo(
    client: &mut postgres::Client,
    sha256: &str,
) -> Result<(faces::KnownPhoto, String, Vec<faces::KnownFace>), ApiError> {
    let (photo, faces) = faces::photo(client, sha256)?
        .ok_or_else(|| ApiError::not_found("no photo with this sha256 is known"))?;
    let uri = photo
        .uri
        .clone()
        .ok_or_else(|| ApiError::not_found("this photo's faces were imported without it"))?;
    Ok((photo, uri, faces))
}

async fn photo_view(State(state): State<Arc<AppState>>, Path(sha256): Path<String>) -> Response {
    let sha256 = match api::parse_sha256(&sha256) {
        Ok(sha) => sha,
        Err(e) => return e.into_response(),
    };
    let view = state
        .blocking(move |state, client| {
            let (_, uri, _) = kept_photo(client, &sha256)?;
            Ok(state.crops.view(&uri, &sha256, &state.options.s3)?.0)
        })
        .await;
    match view {
        Ok(jpeg) => image_response("image/jpeg", jpeg),
        Err(e) => e.into_response(),
    }
}

/// A face's crop (JPEG), or the placeholder of a face without a photo (SVG).
async fn crop(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let id = match id.parse::<i64>() {
        Ok(id) => id,
        Err(_) => return ApiError::bad_request(format!("{id:?} is not a face id")).into_response(),
    };
    let cut = state
        .blocking(move |state, client| {
            let card = faces::cards(client, &[id])?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found(format!("face {id} does not exist")))?;
            let jpeg = state.crops.crop(&card, &state.options.s3)?;
            Ok((jpeg, card))
        })
        .await;
    match cut {
        Ok((Some(jpeg), _)) => image_response("image/jpeg", jpeg),
        Ok((None, card)) => image_response(
            "image/svg+xml",
            crops::placeholder_svg(card.id, card.who.as_deref()).into(),
        ),
        Err(e) => e.into_response(),
    }
}

/// Images are immutable by id (a face's photo and box never change): cached for a day.
fn image_response(content_type: &'static str, body: axum::body::Bytes) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "private, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// A dataset version as its table row shows it.
#[derive(Serialize)]
struct VersionRow {
    label: String,
    current: bool,
    faces: i64,
    actors: i64,
    users: i64,
    dim: i32,
    shards: i32,
    embedder: String,
    created: String,
}

async fn datasets_page(State(state): State<Arc<AppState>>) -> Response {
    let loaded = state
        .blocking(|state, client| {
            let rows = datasets::list(client)?;
            let counts = faces::counts_per_version(client)?;
            let count = |id: i64, source: &str| {
                counts
                    .iter()
                    .find(|(d, s, _)| *d == id && s == source)
                    .map_or(0, |(_, _, n)| *n)
            };
            let versions: Vec<VersionRow> = rows
                .iter()
                .map(|d| VersionRow {
                    label: d.label(),
                    current: d.is_current,
                    faces: d.face_count,
                    actors: count(d.id, "A"),
                    users: count(d.id, "U"),
                    dim: d.dim,
                    shards: d.shard_count,
                    embedder: d.embedder.clone(),
                    created: d.created_at.format("%Y-%m-%d %H:%M").to_string(),
                })
                .collect();
            let stats = if rows.is_empty() {
                None
            } else {
                Some(api::state_stats(state, client)?)
            };
            Ok((versions, stats))
        })
        .await;
    match loaded {
        Ok((versions, stats)) => {
            let stats = stats.map(|s| {
                let head: Vec<String> = s.mean_encoding.iter().take(8).map(|v| format!("{v:.4}")).collect();
                minijinja::context! { mean_head => head.join(" "), ..minijinja::Value::from_serialize(&*s) }
            });
            page(
                &state,
                "datasets.html",
                minijinja::context! { datasets => versions, stats },
            )
        }
        Err(e) => error_page(&state, e),
    }
}
