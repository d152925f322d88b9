//! `ddim-edit serve`: a local web page to edit photos by looking. One process: the model is
//! loaded once, one worker runs the jobs in order, and a small HTTP server (axum) gives the page,
//! embedded in the binary, and the JSON API it uses (`web/openapi.json`). The inversion of a photo
//! is kept for the edits after it (see [`worker`]).

mod api;
mod assets;
mod error;
pub mod limits;
mod preview;
mod progress;
mod request;
mod state;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use clap::Args;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::args::Common;
use api::App;
use request::{Defaults, ModelFlags};
use state::Shared;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address to listen on; anything but loopback exposes the model to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
}

/// Every route of [`router`]: (method, path) as the OpenAPI file names them.
#[cfg(test)]
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/app.js"),
    ("get", "/app.css"),
    ("get", "/api/openapi.json"),
    ("get", "/api/info"),
    ("post", "/api/images"),
    ("post", "/api/images/from-url"),
    ("get", "/api/images/{id}"),
    ("post", "/api/jobs"),
    ("get", "/api/jobs/{id}"),
    ("get", "/api/jobs/{id}/events"),
    ("get", "/api/jobs/{id}/preview.png"),
    ("get", "/api/jobs/{id}/result.png"),
    ("post", "/api/jobs/{id}/cancel"),
];

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/app.css", get(assets::style))
        .route("/api/openapi.json", get(assets::openapi))
        .route("/api/info", get(api::info))
        .route("/api/images", post(api::upload))
        .route("/api/images/from-url", post(api::upload_url))
        .route("/api/images/{id}", get(api::image))
        .route("/api/jobs", post(api::submit))
        .route("/api/jobs/{id}", get(api::status))
        .route("/api/jobs/{id}/events", get(api::events))
        .route("/api/jobs/{id}/preview.png", get(api::preview))
        .route("/api/jobs/{id}/result.png", get(api::result))
        .route("/api/jobs/{id}/cancel", post(api::cancel))
        .fallback(|| async {
            error::ApiError::new(axum::http::StatusCode::NOT_FOUND, "no such route")
        })
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limits::MAX_UPLOAD_BYTES))
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(CatchPanicLayer::new())
        .with_state(app)
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = interrupt => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

pub fn run(a: &ServeArgs) -> Result<()> {
    let common = &a.common;
    let pipeline = Arc::new(crate::commands::load(common)?);
    let size = crate::commands::size(common, &pipeline)?;
    let shared = Arc::new(Shared::default());
    let app = Arc::new(App {
        shared: shared.clone(),
        pipeline: pipeline.clone(),
        defaults: Defaults {
            steps: common.steps,
            guidance: common.guidance.unwrap_or(inversion::DEFAULT_GUIDANCE),
            inversion_guidance: inversion::DEFAULT_INVERSION_GUIDANCE,
            attention: "p2p",
            inversion: inversion::default_inversion(true).name(),
        },
        model: ModelFlags {
            model: common.model.clone(),
            device: common.device.clone(),
            dtype: common.dtype.clone(),
            variant: common.variant.clone(),
            size: common.size,
        },
        size,
    });
    let worker = worker::Worker::new(pipeline, shared.clone(), size);
    let worker = std::thread::Builder::new()
        .name("ddim-edit worker".into())
        .spawn(move || worker.run())
        .context("starting the worker thread")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    let addr = SocketAddr::new(a.host, a.port);
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--host {} --port {}: cannot listen there", a.host, a.port))?;
        let local = listener.local_addr()?;
        if !a.host.is_loopback() {
            eprintln!(
                "warning: listening on {local}, reachable from other machines: anyone who can reach it can run the model and read every uploaded photo"
            );
        }
        println!("http://{local}/");
        let stopping = shared.clone();
        let shutdown = async move {
            stop_signal().await;
            eprintln!("stopping: cancelling the running job");
            stopping.shut_down();
        };
        axum::serve(listener, router(app))
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving")
    });
    shared.shut_down();
    let _ = worker.join();
    served
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The routes are exactly those of the OpenAPI file (the CLI tests call each one on a server).
    #[test]
    fn the_routes_are_the_openapi_files() {
        let spec: serde_json::Value = serde_json::from_str(super::assets::OPENAPI).unwrap();
        let mut documented = BTreeSet::new();
        for (path, ops) in spec["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.insert((method.as_str(), path.as_str()));
            }
        }
        let routed: BTreeSet<(&str, &str)> = super::ROUTES.iter().copied().collect();
        assert_eq!(documented, routed);
    }
}
