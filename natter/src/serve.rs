//! Starting services: one process runs the selected ones on one HTTP listener,
//! shares one database pool, and drains them together on SIGTERM.

use crate::Service;
use crate::config::Config;
use anyhow::Context;
use axum::Router;
use natter_auth::service::AuthService;
use natter_common::health::{self, ReadinessCheck, Vital};
use natter_common::http::TrustForwardedFor;
use natter_common::token::TokenKeys;
use natter_common::{Db, SharedClock, SystemClock};
use std::sync::Arc;
use std::time::Duration;
use tower_http::trace::TraceLayer;

/// How long in-flight requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// After a vital part (the TURN thread) stops: how long `/readyz` reports it
/// before the process starts to stop, how long the drain may then take, and the
/// hard deadline after which the process exits whatever is still running. An
/// orchestrator restarts a process that exits; it does not restart one that runs
/// on half-alive.
const FATAL_REPORT: Duration = Duration::from_secs(1);
const FATAL_DRAIN: Duration = Duration::from_secs(2);
const FATAL_HARD_EXIT: Duration = Duration::from_secs(4);

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
    if service == Service::Turn {
        return serve_turn_only(cfg, shutdown).await;
    }
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
    let fatal = FatalStop::new();

    let mut checks: Vec<(&'static str, ReadinessCheck)> = Vec::new();
    if turn_server.is_some() {
        checks.push(("turn", fatal.turn.check()));
    }
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
        background.push(run_turn(server, shutdown.clone(), fatal.clone()));
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

    let drain = fatal.wait_for_stop(&shutdown).await;
    match tokio::time::timeout(drain, server).await {
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
    fatal.result()?;
    tracing::info!("natter stopped");
    Ok(())
}

/// Turns the loss of a vital part into a prompt, non-zero exit.
#[derive(Clone)]
struct FatalStop {
    /// The TURN thread (embedded in `serve all`, or alone in `serve turn`).
    turn: Vital,
    stopped: natter_common::Shutdown,
}

impl FatalStop {
    fn new() -> Self {
        Self {
            turn: Vital::new(),
            stopped: natter_common::Shutdown::new(),
        }
    }

    /// Records `reason` against TURN and starts the fatal stop.
    fn turn_failed(&self, reason: String) {
        tracing::error!(%reason, "TURN stopped; the process exits so that it is restarted");
        self.turn.fail(reason);
        self.stopped.cancel();
    }

    /// Waits for a signal or a fatal stop, then cancels `shutdown`; returns how
    /// long the HTTP drain may take.
    async fn wait_for_stop(&self, shutdown: &natter_common::Shutdown) -> Duration {
        tokio::select! {
            _ = shutdown.cancelled() => DRAIN_TIMEOUT,
            _ = self.stopped.cancelled() => {
                // Whatever hangs during the drain, the process is gone by then.
                std::thread::spawn(|| {
                    std::thread::sleep(FATAL_HARD_EXIT);
                    eprintln!("natter: a vital part stopped and the drain did not finish; exiting");
                    std::process::exit(1);
                });
                tokio::time::sleep(FATAL_REPORT).await;
                shutdown.cancel();
                FATAL_DRAIN
            }
        }
    }

    fn result(&self) -> anyhow::Result<()> {
        match self.turn.failure() {
            Some(reason) => Err(anyhow::anyhow!("{reason}")),
            None => Ok(()),
        }
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
        .context("turn.auth_secret: cannot read or create the generated secret in the data dir")?;
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

fn run_turn(
    server: natter_turn::TurnServer,
    shutdown: natter_common::Shutdown,
    fatal: FatalStop,
) -> tokio::task::JoinHandle<()> {
    tracing::info!(addrs = ?server.local_addrs(), "TURN listening");
    tokio::spawn(async move {
        let result = server.run(shutdown.clone()).await;
        match result {
            Ok(()) if shutdown.is_cancelled() => {}
            Ok(()) => fatal.turn_failed("TURN server stopped unexpectedly".to_owned()),
            Err(e) => fatal.turn_failed(format!("TURN server stopped: {e}")),
        }
    })
}

/// `serve turn`: the TURN server, and health and metrics on the HTTP listener.
async fn serve_turn_only(cfg: Config, shutdown: natter_common::Shutdown) -> anyhow::Result<()> {
    let server = natter_turn::TurnServer::bind(cfg.turn.clone())
        .await
        .context("turn: cannot start")?;
    let fatal = FatalStop::new();
    let turn = run_turn(server, shutdown.clone(), fatal.clone());
    let app = health::router(vec![("turn", fatal.turn.check())], shutdown.clone());
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot bind {}", cfg.http.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "natter turn listening");
    let server = tokio::spawn(natter_common::http::serve(listener, app, shutdown.clone()));
    let drain = fatal.wait_for_stop(&shutdown).await;
    let _ = tokio::time::timeout(drain, server).await;
    let _ = turn.await;
    fatal.result()?;
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
