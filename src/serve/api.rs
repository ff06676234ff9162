//! The routes: `/api/v1/*` (handlers as small functions over shared state) and the page.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::layout::layout;
use super::runs::{RunBody, Runs, StartError, MAX_JOBS};
use super::security::{require_loopback_host, require_token, strict_headers, Token};
use crate::engine::{EngineError, RunRequest};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// Time a client has to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub(super) struct App {
    pub(super) dir: PathBuf,
    pub(super) state: PathBuf,
    pub(super) jobs: Option<usize>,
    pub(super) grace: Duration,
    pub(super) runs: Arc<Runs>,
}

/// An error answer: a status and `{"error": "..."}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match e {
            EngineError::State(_) | EngineError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, crate::error::error_chain(&e))
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Every route, with the security layers (see `security.rs`).
pub(super) fn router(app: App, token: Token, loopback: bool) -> Router {
    let api = Router::new()
        .route("/tasks", get(tasks))
        .route("/graph", get(graph))
        .route("/runs", get(list_runs).post(start_run))
        .route("/runs/{id}", get(run_summary))
        .route("/runs/{id}/events", get(events))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/junit", get(junit))
        .route("/runs/{id}/tasks/{*name}", get(task))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_TIMEOUT,
        ))
        // Last added, first run: nothing above happens without the token.
        .layer(axum::middleware::from_fn_with_state(token, require_token));
    let mut router = Router::new()
        .route("/", get(super::page::index))
        .route("/app.js", get(super::page::script))
        .route("/app.css", get(super::page::style))
        .nest("/api/v1", api)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not found") })
        .with_state(app);
    if loopback {
        router = router.layer(axum::middleware::from_fn(require_loopback_host));
    }
    router.layer(axum::middleware::from_fn(strict_headers))
}

/// Runs blocking work (loading a tree, preparing a run) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `GET /api/v1/tasks`: `pexen list --format json` of the tree as it is now on disk.
async fn tasks(State(app): State<App>) -> ApiResult<Json<Value>> {
    let dir = app.dir.clone();
    let doc = blocking(move || {
        crate::engine::load(&dir).and_then(|tree| crate::engine::describe(&tree, &[]))
    })
    .await??;
    Ok(Json(doc))
}

/// `GET /api/v1/graph`: the layered layout of the tree's DAG, for the page.
async fn graph(State(app): State<App>) -> ApiResult<Response> {
    let dir = app.dir.clone();
    blocking(move || {
        let tree = crate::engine::load(&dir).map_err(ApiError::from)?;
        let (graph, _) =
            crate::graph::Graph::build(&tree.tasks, &tree.capacity).map_err(EngineError::from)?;
        let mut doc = serde_json::to_value(layout(&tree.tasks, &graph))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        doc["dir"] = json!(dir);
        Ok(Json(doc).into_response())
    })
    .await?
}

/// `POST /api/v1/runs`: starts a run; `409` while one is going.
async fn start_run(
    State(app): State<App>,
    body: Result<Json<RunBody>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    if let Some(j) = body.jobs {
        if j == 0 || j > MAX_JOBS {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("jobs: expected 1 to {MAX_JOBS}, got {j}"),
            ));
        }
    }
    let request = RunRequest {
        filters: body.filter.clone(),
        tags: body.tags.clone(),
        jobs: body.jobs.map(|j| j as usize).or(app.jobs),
        resume: body.resume,
        fail_fast: body.fail_fast,
        retries: body.retries,
        grace: app.grace,
        state: app.state.clone(),
        ..RunRequest::new(app.dir.clone())
    };
    let runs = app.runs.clone();
    match blocking(move || runs.start(request, body)).await? {
        Ok(entry) => Ok((
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/runs/{}", entry.id))],
            Json(json!({"id": entry.id})),
        )
            .into_response()),
        Err(StartError::Busy(id)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} of this state directory is going: cancel it or wait for its end"),
        )),
        Err(StartError::Engine(e)) => Err(e.into()),
        Err(StartError::Thread(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot start the run: {e}"),
        )),
    }
}

async fn list_runs(State(app): State<App>) -> Json<Value> {
    Json(Value::Array(
        app.runs.all().iter().map(|r| r.summary(false)).collect(),
    ))
}

fn find(app: &App, id: &str) -> ApiResult<Arc<super::runs::RunEntry>> {
    app.runs
        .get(id)
        .ok_or_else(|| ApiError::not_found(format_args!("run `{id}`")))
}

async fn run_summary(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(find(&app, &id)?.summary(true)))
}

/// `POST /api/v1/runs/ID/cancel`: as Ctrl-C. `202` when the run was going, `409` when over.
async fn cancel(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Response> {
    let run = find(&app, &id)?;
    if run.cancel() {
        Ok((StatusCode::ACCEPTED, Json(run.summary(false))).into_response())
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} has already ended"),
        ))
    }
}

async fn junit(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Response> {
    let run = find(&app, &id)?;
    let xml = run
        .junit()
        .map_err(|m| ApiError::new(StatusCode::CONFLICT, m))?;
    Ok((
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response())
}

/// `GET /api/v1/runs/ID/tasks/NAME`: the name is only looked up among the run's tasks.
async fn task(
    State(app): State<App>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let run = find(&app, &id)?;
    run.task(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format_args!("task `{name}` in run {id}")))
}

/// Events sent per wake-up of a stream at most, so that one slow client does not hold the log.
const SSE_BATCH: usize = 512;

/// `GET /api/v1/runs/ID/events`: every event from the first (or after `Last-Event-ID`), then
/// live; the stream ends with the run.
async fn events(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let run = find(&app, &id)?;
    let total = run.log().lines.len();
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n <= total)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Last-Event-ID: expected an event number from 0 to {total}"),
                )
            })?,
    };
    let rx = run.subscribe();
    let stream = futures_util::stream::unfold((run, after, rx), |(run, next, mut rx)| async move {
        loop {
            let (batch, done) = {
                let log = run.log();
                let end = log.lines.len().min(next + SSE_BATCH);
                let batch: Vec<_> = log.lines.get(next..end).unwrap_or_default().to_vec();
                (batch, log.done)
            };
            if !batch.is_empty() {
                let events: Vec<Result<SseEvent, std::convert::Infallible>> = batch
                    .iter()
                    .enumerate()
                    .map(|(k, line)| {
                        Ok(SseEvent::default()
                            .id((next + k + 1).to_string())
                            .data(&**line))
                    })
                    .collect();
                let next = next + batch.len();
                return Some((futures_util::stream::iter(events), (run, next, rx)));
            }
            if done || rx.changed().await.is_err() {
                return None;
            }
        }
    })
    .flatten();
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
