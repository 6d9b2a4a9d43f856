//! Starting services: one process runs the selected ones on one HTTP listener,
//! shares one database pool, and drains them together on SIGTERM.

use crate::Service;
use crate::config::Config;
use crate::supervise::Supervisor;
use anyhow::Context;
use axum::Router;
use natter_auth::service::AuthService;
use natter_common::health::{self, ReadinessCheck};
use natter_common::http::ClientIpPolicy;
use natter_common::parts::Part;
use natter_common::token::TokenKeys;
use natter_common::{Db, SharedClock, SystemClock};
use std::sync::Arc;
use std::time::Duration;
use tower_http::trace::TraceLayer;

/// How long in-flight requests get to finish after SIGTERM (the parts then get
/// a few seconds more; the chart's grace period covers both).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(22);
/// After TURN's drain grace period: time to close its sockets and report.
const TURN_STOP_MARGIN: Duration = Duration::from_secs(3);

/// Applies every service's migrations.
pub(crate) async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let _writer = crate::writer_lock::for_config(cfg).await?;
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
    natter_signaling::store::for_db(&db)
        .migrate()
        .await
        .context("signaling migrations")?;
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
    .context("tokens.signing_key")?;
    for key in &cfg.tokens.previous_keys {
        natter_common::secrets_file::check_configured("tokens.previous_keys[..]", key)?;
    }
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

/// Makes what the process writes private: the database holds phone numbers
/// and message bodies, the SMS outbox live codes, media users' files. A umask
/// of 077 makes every new file 0600 and directory 0700; the database files of
/// an older version are narrowed too.
fn private_files(data_dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    for name in ["natter.db", "natter.db-wal", "natter.db-shm"] {
        let path = data_dir.join(name);
        if path.exists()
            && let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot make the database file private");
        }
    }
}

/// Runs `service` until SIGTERM/SIGINT, then drains.
pub(crate) async fn serve(cfg: Config, service: Service) -> anyhow::Result<()> {
    private_files(&cfg.data_dir);
    let shutdown = natter_common::shutdown::on_signals();
    natter_common::metrics::handle();
    let clock: SharedClock = Arc::new(SystemClock);
    if service == Service::Turn {
        return serve_turn_only(cfg, shutdown).await;
    }
    // Kept until the process exits: one process per SQLite database (taken
    // before anything in the data dir is read or generated).
    let _writer = crate::writer_lock::for_config(&cfg).await?;
    let tokens = token_keys(&cfg)?;
    let db = Db::connect(&cfg.database, &cfg.data_dir).await?;
    tracing::info!(engine = ?db.engine(), "database open");
    let turn = turn_config(&cfg, service)?;
    // Bound before signaling is built, so the TURN URLs it hands out carry the
    // real port even when the configured one is 0.
    let turn_server = if service == Service::All {
        Some(
            natter_turn::TurnServer::bind(turn.clone())
                .await
                .context("turn: cannot start")?,
        )
    } else {
        None
    };
    let turn_port = turn_server
        .as_ref()
        .map_or(turn.listen.port(), |t| t.local_addrs().udp.port());
    let supervisor = Supervisor::new();

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
    let signaling = if matches!(service, Service::All | Service::Chat | Service::Signaling) {
        Some(
            natter_signaling::SignalingService::build(
                signaling_config(&cfg, &turn, turn_port),
                &db,
                cfg.database.migrate_on_start,
                clock.clone(),
                tokens.clone(),
                turn.auth_secret.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!(e))?,
        )
    } else {
        None
    };
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
        // Call frames ride the chat socket: the call state machine runs
        // where the gateway runs.
        if let Some(sig) = &signaling {
            let calls = sig.attach(chat.state().device_link());
            chat.state().set_call_handler(Arc::new(calls));
        }
        app = app.merge(chat.router());
        background.extend(chat.spawn_background(shutdown.clone()));
    }
    if let Some(sig) = &signaling {
        if matches!(service, Service::All | Service::Signaling) {
            app = app.merge(sig.router());
        }
        background.extend(sig.spawn_background(shutdown.clone()));
    }
    if let Some(server) = turn_server {
        background.push(run_turn(server, shutdown.clone(), supervisor.clone()));
    }
    for part in background {
        checks.push(supervisor.watch(part, &shutdown));
    }

    let app = app
        .merge(health::router(
            checks,
            shutdown.clone(),
            health::MetricsAccess::from_config(&cfg.http),
        ))
        // Every error in the documented JSON shape, unknown routes and methods too.
        .fallback(|| async { natter_common::ApiError::not_found("not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            natter_common::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(axum::middleware::from_fn(
            natter_common::json_errors::json_errors,
        ))
        .layer(axum::Extension(ClientIpPolicy::from_config(&cfg.http)))
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

    let server = start_http(&cfg, app, &shutdown, &format!("{service:?}")).await?;

    let drain = supervisor.wait_for_stop(&shutdown, DRAIN_TIMEOUT).await;
    if service == Service::All {
        allow_turn_drain(&supervisor, &turn);
    }
    match tokio::time::timeout(drain, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("http drained"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "http server task failed"),
        Err(_) => tracing::warn!(
            "drain timed out after {} s; closing anyway",
            DRAIN_TIMEOUT.as_secs()
        ),
    }
    let parts = supervisor.finish().await;
    // Bounded: a pool whose connections hang must not hold the exit.
    if tokio::time::timeout(Duration::from_secs(2), db.close())
        .await
        .is_err()
    {
        tracing::warn!("database pool did not close within 2 s");
    }
    parts?;
    tracing::info!("natter stopped");
    Ok(())
}

/// After SIGTERM, TURN relays live allocations for up to its grace period: the
/// process waits for it (but not after a fatal stop: it exits promptly then).
fn allow_turn_drain(supervisor: &Supervisor, turn: &natter_turn::TurnConfig) {
    if !supervisor.failed() {
        supervisor.allow_stop_until(
            std::time::Instant::now()
                + Duration::from_secs(turn.drain_grace_secs)
                + TURN_STOP_MARGIN,
        );
    }
}

/// The TURN configuration in force: in the embedded shape (`serve all`) an
/// unset `turn.auth_secret` is generated into the data dir, so the TURN server
/// and the credentials signaling hands out agree with no set-up. Split
/// services must be given the same secret (the Helm chart does).
fn turn_config(cfg: &Config, service: Service) -> anyhow::Result<natter_turn::TurnConfig> {
    let mut turn = cfg.turn.clone();
    if service == Service::All {
        turn.auth_secret = natter_common::secrets_file::configured_or_generated(
            &cfg.turn.auth_secret,
            &cfg.data_dir,
            "turn-auth-secret",
        )
        .context("turn.auth_secret")?;
    }
    Ok(turn)
}

/// Signaling's settings; in the embedded shape with no TURN URLs configured,
/// the embedded TURN server's at `http.public_url`'s host.
fn signaling_config(
    cfg: &Config,
    turn: &natter_turn::TurnConfig,
    port: u16,
) -> natter_signaling::SignalingConfig {
    let mut sig = cfg.signaling.clone();
    if sig.turn_urls.0.is_empty()
        && let Some(host) = public_host(&cfg.http.public_url)
    {
        sig.turn_urls = natter_signaling::config::UrlList(vec![
            format!("turn:{host}:{port}?transport=udp"),
            format!("turn:{host}:{port}?transport=tcp"),
        ]);
        if let Some(tls) = turn.tls_listen {
            sig.turn_urls
                .0
                .push(format!("turns:{host}:{}?transport=tcp", tls.port()));
        }
    }
    sig
}

/// `host` of `scheme://host[:port]/…`.
fn public_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => authority.split(':').next()?.to_owned(),
    };
    (!host.is_empty()).then_some(host)
}

/// The TURN server as a supervised part, named "turn".
fn run_turn(
    server: natter_turn::TurnServer,
    shutdown: natter_common::Shutdown,
    supervisor: Supervisor,
) -> Part {
    tracing::info!(addrs = ?server.local_addrs(), "TURN listening");
    Part::spawn("turn", async move {
        if let Err(e) = server.run(shutdown.clone()).await {
            // The watcher would only see "stopped"; the reason is here.
            supervisor.fail("turn", format!("TURN server stopped: {e}"));
        }
    })
}

/// Binds `http.listen` and serves `app` there under the `[http]` limits.
async fn start_http(
    cfg: &Config,
    app: axum::Router,
    shutdown: &natter_common::Shutdown,
    shape: &str,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", cfg.http.listen))?;
    tracing::info!(addr = %listener.local_addr()?, service = shape, "natter listening");
    let limits = natter_common::listener::ListenerLimits::from_config(&cfg.http);
    Ok(tokio::spawn(natter_common::listener::serve_with_limits(
        listener,
        app,
        shutdown.clone(),
        limits,
    )))
}

/// `serve turn`: the TURN server, and health and metrics on the HTTP listener.
async fn serve_turn_only(cfg: Config, shutdown: natter_common::Shutdown) -> anyhow::Result<()> {
    let server = natter_turn::TurnServer::bind(cfg.turn.clone())
        .await
        .context("turn: cannot start")?;
    let supervisor = Supervisor::new();
    let turn = run_turn(server, shutdown.clone(), supervisor.clone());
    // Readiness follows `shutdown` (503 from SIGTERM on), but the listener stays
    // up until TURN has drained, so /metrics shows the live allocations going
    // down (natter_turn_allocations, natter_turn_draining).
    let app = health::router(
        vec![supervisor.watch(turn, &shutdown)],
        shutdown.clone(),
        health::MetricsAccess::from_config(&cfg.http),
    );
    let http_stop = natter_common::Shutdown::new();
    let server = start_http(&cfg, app, &http_stop, "turn").await?;
    let _ = supervisor.wait_for_stop(&shutdown, DRAIN_TIMEOUT).await;
    allow_turn_drain(&supervisor, &cfg.turn);
    let parts = supervisor.finish().await;
    http_stop.cancel();
    // Only probes and scrapes are served here: nothing long to wait for.
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    parts?;
    tracing::info!("natter stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_host_of_urls() {
        assert_eq!(
            public_host("https://chat.example.org/").as_deref(),
            Some("chat.example.org")
        );
        assert_eq!(
            public_host("http://127.0.0.1:8080").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(public_host("http://[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(public_host("nonsense"), None);
    }

    #[test]
    fn embedded_turn_urls_follow_public_url() {
        let cfg = Config::default();
        let sig = signaling_config(&cfg, &cfg.turn, 3478);
        assert_eq!(
            sig.turn_urls.0,
            vec![
                "turn:127.0.0.1:3478?transport=udp",
                "turn:127.0.0.1:3478?transport=tcp"
            ]
        );
    }
}
