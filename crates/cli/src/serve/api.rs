//! The JSON HTTP API the page uses, as `crates/cli/web/openapi.json` documents it. Handlers check
//! and enqueue; the worker computes.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use inversion::Pipeline;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::error::ApiError;
use super::limits::{MAX_PIXELS, MAX_QUEUE, MAX_UPLOAD_BYTES};
use super::request::{Defaults, EditRequest, ModelFlags, command};
use super::state::{Job, Photo, Shared, State as JobState, Status, random_id};

/// What every handler reads.
pub struct App {
    pub shared: Arc<Shared>,
    pub pipeline: Arc<Pipeline>,
    pub defaults: Defaults,
    pub model: ModelFlags,
    pub size: (usize, usize),
}

pub type AppState = State<Arc<App>>;

#[derive(Serialize)]
pub struct Info {
    model: String,
    device: String,
    dtype: String,
    width: usize,
    height: usize,
    defaults: Defaults,
    inversions: &'static [&'static str],
    limits: Limits,
}

#[derive(Serialize)]
struct Limits {
    max_upload_bytes: usize,
    max_pixels: u64,
    max_queue: usize,
}

pub async fn info(State(app): AppState) -> Json<Info> {
    Json(Info {
        model: app.model.model.clone(),
        device: app.model.device.clone(),
        dtype: app.model.dtype.clone(),
        width: app.size.0,
        height: app.size.1,
        defaults: app.defaults.clone(),
        inversions: &inversion::Inversion::NAMES,
        limits: Limits {
            max_upload_bytes: MAX_UPLOAD_BYTES,
            max_pixels: MAX_PIXELS,
            max_queue: MAX_QUEUE,
        },
    })
}

#[derive(Deserialize)]
pub struct UploadQuery {
    name: Option<String>,
}

#[derive(Serialize)]
pub struct Uploaded {
    id: String,
    /// The photo's own size; the model sees it resized to the server's size.
    width: u32,
    height: u32,
    url: String,
}

/// Decodes an upload after checking its header's pixel count.
fn decode_photo(bytes: &[u8], name: String) -> Result<Photo, ApiError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ApiError::bad_request(format!("cannot read the upload: {e}")))?;
    let Some(format) = reader.format() else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the upload is not an image: expected PNG, JPEG or WebP",
        ));
    };
    let mut header = reader;
    header.no_limits();
    let (w, h) = header.into_dimensions().map_err(|e| {
        ApiError::bad_request(format!("cannot read the {format:?} image's header: {e}"))
    })?;
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the image is {w}x{h} pixels, more than the {MAX_PIXELS} accepted"),
        ));
    }
    let image = inversion::image::decode_image(bytes, "the upload")
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let id = hex(&Sha256::digest(bytes)[..12]);
    Ok(Photo { id, name, image })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /api/images`: the body is the image file.
pub async fn upload(
    State(app): AppState,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the upload is empty: send the image file as the body",
        ));
    }
    let name = q
        .name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "photo.png".into());
    store(&app, body, name).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromUrl {
    url: String,
}

/// `POST /api/images/from-url`: the server downloads an http(s) URL (never a file path).
pub async fn upload_url(
    State(app): AppState,
    body: Bytes,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let FromUrl { url } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"url\": \"https://…\"}}: {e}")))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ApiError::field("url", "must be an http:// or https:// URL"));
    }
    let name = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("photo.png")
        .to_string();
    let bytes = tokio::task::spawn_blocking(move || crate::commands::download(&url, "the URL"))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "downloading failed"))?
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("{e:#}")))?;
    store(&app, Bytes::from(bytes), name).await
}

async fn store(
    app: &App,
    body: Bytes,
    name: String,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let name: String = name.chars().filter(|c| !c.is_control()).take(200).collect();
    let photo = tokio::task::spawn_blocking(move || decode_photo(&body, name))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "decoding failed"))??;
    let (width, height) = photo.image.dimensions();
    let photo = app.shared.add_photo(photo);
    let url = format!("/api/images/{}", photo.id);
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            id: photo.id.clone(),
            width,
            height,
            url,
        }),
    ))
}

fn png(bytes: Arc<Vec<u8>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes.to_vec(),
    )
        .into_response()
}

/// `GET /api/images/{id}`: the photo as the model sees it, resized to the server's size.
pub async fn image(State(app): AppState, Path(id): Path<String>) -> Result<Response, ApiError> {
    let photo = app
        .shared
        .photo(&id)
        .ok_or_else(|| ApiError::not_found("image", &id))?;
    let (w, h) = app.size;
    let bytes = tokio::task::spawn_blocking(move || {
        // As `image_to_tensor` sees it: resized (bicubic) unless it has the size already.
        if photo.image.dimensions() == (w as u32, h as u32) {
            return crate::output::png_bytes(&photo.image);
        }
        let filter = image::imageops::FilterType::CatmullRom;
        crate::output::png_bytes(&image::imageops::resize(
            &photo.image,
            w as u32,
            h as u32,
            filter,
        ))
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "resizing failed"))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok(png(Arc::new(bytes)))
}

/// `POST /api/jobs`: checks the edit (the prompts' tokens included) and queues it.
pub async fn submit(
    State(app): AppState,
    body: Bytes,
) -> Result<(StatusCode, Json<Status>), ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let request: EditRequest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || path == "." {
            ApiError::bad_request(format!("the job is not valid JSON: {inner}"))
        } else {
            ApiError::bad_request(format!("`{path}`: {inner}"))
        }
    })?;
    let options = request.options(&app.defaults)?;
    let photo = app.shared.photo(&request.image).ok_or_else(|| {
        ApiError::field(
            "image",
            format!(
                "names no uploaded photo ({:?}); upload it first",
                request.image
            ),
        )
    })?;
    let (p, r, o) = (app.pipeline.clone(), request.clone(), options.clone());
    tokio::task::spawn_blocking(move || {
        p.schedule().timesteps(o.steps)?;
        inversion::check_method(&p, &r.prompt, &r.edit_prompt, &o).map(|_| ())
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "checking the job failed"))?
    .map_err(|e| ApiError::bad_request(format!("{:#}", crate::commands::flagged(e))))?;
    let id = random_id();
    let status = Status {
        id: id.clone(),
        image: photo.id.clone(),
        state: JobState::Queued,
        position: None,
        submitted: 0,
        started: None,
        phase: None,
        step: 0,
        total: 0,
        fraction: 0.0,
        elapsed_s: 0.0,
        eta_s: None,
        inversion_reused: false,
        unet_calls: 0,
        unet_calls_saved: 0,
        preview: 0,
        error: None,
        command: command(&photo.name, &request, &options, &app.model),
        settings: request.clone(),
    };
    let job = Job {
        photo,
        request,
        options,
        cancel: Arc::new(AtomicBool::new(false)),
        status: watch::Sender::new(status),
        preview: None,
        result: None,
    };
    let status = app.shared.submit(id, job).map_err(|why| {
        let code = match why {
            "the queue is full" => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(
            code,
            format!("{why} ({MAX_QUEUE} jobs wait at most); try again later"),
        )
    })?;
    Ok((StatusCode::ACCEPTED, Json(status)))
}

fn watcher(app: &App, id: &str) -> Result<watch::Receiver<Status>, ApiError> {
    let s = app.shared.lock();
    let job = s
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::not_found("job", id))?;
    Ok(job.status.subscribe())
}

/// `GET /api/jobs/{id}`.
pub async fn status(
    State(app): AppState,
    Path(id): Path<String>,
) -> Result<Json<Status>, ApiError> {
    Ok(Json(watcher(&app, &id)?.borrow().clone()))
}

/// `GET /api/jobs/{id}/events`: the status as server-sent events (`status`), one on every change
/// and the last when the job ends.
pub async fn events(
    State(app): AppState,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let rx = watcher(&app, &id)?;
    let stream = futures::stream::unfold((rx, true, false), |(mut rx, first, ended)| async move {
        // After the first event, wait for a change; a closed channel (the job was forgotten)
        // ends the stream.
        if ended || (!first && rx.changed().await.is_err()) {
            return None;
        }
        let status = rx.borrow_and_update().clone();
        let ended = status.state.is_final();
        let event = Event::default()
            .event("status")
            .json_data(&status)
            .unwrap_or_default();
        Some((Ok(event), (rx, false, ended)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /api/jobs/{id}/preview.png` and `…/result.png`.
fn job_png(app: &App, id: &str, result: bool) -> Result<Response, ApiError> {
    let s = app.shared.lock();
    let job = s
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::not_found("job", id))?;
    let png_of = if result { &job.result } else { &job.preview };
    match png_of {
        Some(bytes) => Ok(png(bytes.clone())),
        None => {
            let state = job.status.borrow().state;
            let what = if result { "result" } else { "preview" };
            Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("the job has no {what} yet (it is {state:?})").to_lowercase(),
            ))
        }
    }
}

pub async fn preview(State(app): AppState, Path(id): Path<String>) -> Result<Response, ApiError> {
    job_png(&app, &id, false)
}

pub async fn result(State(app): AppState, Path(id): Path<String>) -> Result<Response, ApiError> {
    job_png(&app, &id, true)
}

/// `POST /api/jobs/{id}/cancel`.
pub async fn cancel(
    State(app): AppState,
    Path(id): Path<String>,
) -> Result<Json<Status>, ApiError> {
    if !app.shared.cancel(&id) {
        return Err(ApiError::not_found("job", &id));
    }
    status(State(app), Path(id)).await
}
