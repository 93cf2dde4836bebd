//! `facematch serve`: the web app and the JSON API, with the engine answering searches as they
//! arrive over the dataset held in memory (README: Web app and API).

use super::common::ImageStoreArgs;
use super::photos::FaceArgs;
use super::watch::EngineArgs;
use anyhow::Result;
use clap::Args;
use std::net::SocketAddr;

/// `facematch serve`.
#[derive(Debug, Args)]
#[cfg_attr(not(feature = "web"), allow(dead_code))]
pub struct ServeArgs {
    /// Address to listen on. Anything but a loopback address needs --token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Bearer token every API request and page must carry (`Authorization: Bearer …`; a
    /// browser opens a page once with ?token=… and keeps it in a cookie).
    #[arg(long, env = "FACEMATCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Largest upload accepted, in megabytes.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1024))]
    upload_limit_mb: u64,
    #[command(flatten)]
    face: FaceArgs,
    #[command(flatten)]
    store: ImageStoreArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Serves until SIGTERM or SIGINT.
#[cfg(feature = "web")]
pub fn exec(args: ServeArgs) -> Result<()> {
    use crate::web::{ServeOptions, serve};
    let (runner, options) = args.engine.engine()?;
    let serve_options = ServeOptions {
        bind: args.bind,
        token: args.token.filter(|t| !t.is_empty()),
        upload_limit: (args.upload_limit_mb * 1024 * 1024) as usize,
        database_url: args.engine.db.url()?,
        image_store: args.store.image_store,
        s3: args.engine.s3.options(),
        poll: args.engine.poll,
    };
    let face = args.face;
    face.options()?;
    serve(
        serve_options,
        Box::new(move || face.encoder()),
        runner,
        options,
        |address| {
            // Scripts and tests wait for this line.
            println!("listening on http://{address}");
        },
    )
}

/// Without the feature: says what is missing.
#[cfg(not(feature = "web"))]
pub fn exec(_: ServeArgs) -> Result<()> {
    anyhow::bail!("this facematch was built without the `web` feature: `serve` is not in it")
}
