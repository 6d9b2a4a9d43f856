//! Starting services: one process runs the selected ones on one HTTP listener,
//! shares one database pool, and drains them together on SIGTERM.

use crate::Service;
use crate::config::Config;
use anyhow::Context;
use axum::Router;
use natter_auth::service::AuthService;
use natter_common::health::{self, ReadinessCheck};
use natter_common::http::TrustForwardedFor;
use natter_common::token::TokenKeys;
use natter_common::{Db, SharedClock, SystemClock};
use std::sync::Arc;
use std::time::Duration;
use tower_http::trace::TraceLayer;

/// How long in-flight requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// Applies every service's migrations.
pub(crate) async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let db = Db::connect(&cfg.database, &cfg.data_dir).await?;
    natter_auth::store::for_db(&db)
        .migrate()
        .await
        .context("auth migrations")?;
    natter_media::store::for_db(&db)
        .migrate()
        .await
        .context("media migrations")?;
    natter_chat::store::for_db(&db)
        .migrate()
        .await
        .context("chat migrations")?;
    tracing::info!(engine = ?db.engine(), "migrations applied");
    db.close().await;
    Ok(())
}

fn token_keys(cfg: &Config) -> anyhow::Result<Arc<TokenKeys>> {
    let current = natter_common::secrets_file::configured_or_generated(
        &cfg.tokens.signing_key,
        &cfg.data_dir,
        "token-signing-key",
    )
    .context("tokens.signing_key: cannot read or create the generated key in the data dir")?;
    let previous: Vec<&[u8]> = cfg
        .tokens
        .previous_keys
        .iter()
        .map(|k| k.expose().as_bytes())
        .collect();
    Ok(Arc::new(TokenKeys::new(
        current.expose().as_bytes(),
        &previous,
    )))
}

/// Runs `service` until SIGTERM/SIGINT, then drains.
pub(crate) async fn serve(cfg: Config, service: Service) -> anyhow::Result<()> {
    let shutdown = natter_common::shutdown::on_signals();
    natter_common::metrics::handle();
    let clock: SharedClock = Arc::new(SystemClock);
    let tokens = token_keys(&cfg)?;
    let db = Db::connect(&cfg.database, &cfg.data_dir).await?;
    tracing::info!(engine = ?db.engine(), "database open");

    let mut checks: Vec<(&'static str, ReadinessCheck)> = Vec::new();
    {
        let db = db.clone();
        checks.push((
            "database",
            health::check(move || {
                let db = db.clone();
                async move { db.ping().await.map_err(|e| e.to_string()) }
            }),
        ));
    }

    let mut app = Router::new();
    let mut background = Vec::new();
    let mut auth_state = None;
    if matches!(service, Service::All | Service::Auth) {
        let auth = AuthService::build(
            cfg.auth.clone(),
            &db,
            cfg.database.migrate_on_start,
            &cfg.data_dir,
            clock.clone(),
            tokens.clone(),
            cfg.tokens.access_ttl_secs,
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        app = app.merge(auth.router());
        background.push(auth.spawn_cleanup(shutdown.clone()));
        auth_state = Some(auth.state.clone());
    }
    if matches!(service, Service::All | Service::Media) {
        let media = natter_media::service::MediaService::build(
            cfg.media.clone(),
            &db,
            cfg.database.migrate_on_start,
            &cfg.data_dir,
            clock.clone(),
            tokens.clone(),
            cfg.http.public_url.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        if let Some(auth) = &auth_state {
            auth.set_avatar_refs(Arc::new(crate::avatar_refs::MediaAvatarRefs(
                media.media().clone(),
            )));
        }
        app = app.merge(media.router());
        checks.push(("media", health::check(media.readiness())));
        background.extend(media.spawn_background(shutdown.clone()));
    }
    if matches!(service, Service::All | Service::Chat) {
        let mut chat = natter_chat::ChatService::build(
            cfg.chat.clone(),
            &db,
            cfg.database.migrate_on_start,
            &cfg.data_dir,
            clock.clone(),
            tokens.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        if cfg.redis.enabled() {
            chat.connect_redis(&cfg.redis)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
        }
        app = app.merge(chat.router());
        background.extend(chat.spawn_background(shutdown.clone()));
    }

    let app = app
        .merge(health::router(checks, shutdown.clone()))
        .layer(axum::Extension(TrustForwardedFor(
            cfg.http.trust_forwarded_for,
        )))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                tracing::info_span!("http", method = %req.method(), route = %route)
            }),
        );

    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", cfg.http.listen))?;
    tracing::info!(addr = %listener.local_addr()?, ?service, "natter listening");
    let server = tokio::spawn(natter_common::http::serve(listener, app, shutdown.clone()));

    shutdown.cancelled().await;
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("http drained"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "http server task failed"),
        Err(_) => tracing::warn!(
            "drain timed out after {} s; closing anyway",
            DRAIN_TIMEOUT.as_secs()
        ),
    }
    for task in background {
        let _ = task.await;
    }
    db.close().await;
    tracing::info!("natter stopped");
    Ok(())
}
