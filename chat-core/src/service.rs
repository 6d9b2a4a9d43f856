//! Wiring: builds chat-core from configuration, and runs its background tasks
//! (the group-commit writer, push sender, purge, device check, last-seen flush).

use crate::ChatConfig;
use crate::account_limits::AccountLimit;
use crate::hub::Hub;
use crate::pipeline::SessionConfig;
use crate::push::PushNotice;
use crate::state::{ChatState, Inner};
use crate::store::{self, MessageStore};
use crate::writer::{WriteOp, WriterTask};
use natter_common::parts::Part;
use natter_common::token::TokenKeys;
use natter_common::{Db, SharedClock, Shutdown};
use natter_proto::CloseCode;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the binary needs to run chat.
pub struct ChatService {
    state: ChatState,
    /// Taken by `spawn_background`.
    pending: Mutex<Option<Pending>>,
}

struct Pending {
    writer_rx: mpsc::Receiver<WriteOp>,
    push_rx: mpsc::Receiver<PushNotice>,
    push_tx: mpsc::Sender<PushNotice>,
    sender: Arc<dyn crate::push::PushSender>,
}

impl ChatService {
    /// Opens the store (migrating when asked) and builds the state. Nothing is
    /// delivered until [`ChatService::spawn_background`] starts the writer.
    pub async fn build(
        cfg: ChatConfig,
        db: &Db,
        migrate: bool,
        data_dir: &Path,
        clock: SharedClock,
        tokens: Arc<TokenKeys>,
    ) -> Result<Self, String> {
        cfg.validate()?;
        let store = store::for_db(db);
        if migrate {
            store
                .migrate()
                .await
                .map_err(|e| format!("chat: migrations failed: {e}"))?;
        }
        Self::with_store(cfg, store, data_dir, clock, tokens)
    }

    /// Like [`ChatService::build`] with an already open store.
    pub fn with_store(
        cfg: ChatConfig,
        store: Arc<dyn MessageStore>,
        data_dir: &Path,
        clock: SharedClock,
        tokens: Arc<TokenKeys>,
    ) -> Result<Self, String> {
        cfg.validate()?;
        let sender = crate::push::from_config(&cfg.push, data_dir, store.clone())?;
        let (writer, writer_rx) = crate::writer::channel(cfg.writer_queue);
        let (push_tx, push_rx) = mpsc::channel(cfg.push.queue);
        let hub = Arc::new(Hub::new(i64::from(cfg.push.min_interval_secs) * 1000));
        let state = ChatState(Arc::new(Inner {
            unauthenticated: Default::default(),
            user_sends: Arc::new(AccountLimit::new("sends", cfg.limit_sends_per_user)),
            group_writes: Arc::new(AccountLimit::new("group_writes", cfg.limit_group_writes)),
            session_cfg: SessionConfig::from_chat(&cfg),
            cfg,
            store,
            hub,
            cluster: Arc::new(crate::cluster::Embedded),
            writer,
            clock,
            tokens,
            shutdown: CancellationToken::new(),
            calls: std::sync::OnceLock::new(),
            push: push_tx.downgrade(),
        }));
        Ok(Self {
            state,
            pending: Mutex::new(Some(Pending {
                writer_rx,
                push_rx,
                push_tx,
                sender,
            })),
        })
    }

    /// Joins the cluster through Redis (the distributed shape): the connection
    /// registry, presence and frames for sockets on other nodes go through it.
    /// Call before [`ChatService::router`] and [`ChatService::spawn_background`].
    pub async fn connect_redis(&mut self, cfg: &crate::RedisConfig) -> Result<(), String> {
        let cluster =
            crate::cluster::RedisCluster::connect(cfg, self.state.0.clock.clone()).await?;
        let inner = Arc::get_mut(&mut self.state.0)
            .ok_or("chat: connect_redis must be called before the service is shared")?;
        inner.cluster = Arc::new(cluster);
        Ok(())
    }

    /// Handler state.
    pub fn state(&self) -> &ChatState {
        &self.state
    }

    /// The HTTP routes: `/v1/ws`, `/v1/messages…`, `/v1/groups…`,
    /// `/v1/presence…`, `/v1/push…`.
    pub fn router(&self) -> axum::Router {
        crate::api::router(self.state.clone())
    }

    /// Starts the writer, the push sender and the periodic jobs. On `shutdown`
    /// every socket is closed with 1001 (going away), the writer commits what
    /// it already accepted, last-seen times are flushed, and the tasks end.
    /// Call once; later calls return no tasks.
    pub fn spawn_background(&self, shutdown: Shutdown) -> Vec<Part> {
        let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Vec::new();
        };
        let inner = &self.state.0;
        let mut tasks = Vec::new();
        // Sockets and the writer watch the service's own token, cancelled from
        // the process-wide one.
        {
            let ours = inner.shutdown.clone();
            let hub = inner.hub.clone();
            let shutdown = shutdown.clone();
            tasks.push(Part::spawn("chat-close", async move {
                shutdown.cancelled().await;
                ours.cancel();
                hub.close_all(CloseCode::GoingAway);
            }));
        }
        let writer = WriterTask {
            store: inner.store.clone(),
            hub: inner.hub.clone(),
            cluster: inner.cluster.clone(),
            clock: inner.clock.clone(),
            push: p.push_tx.clone(),
            ttl_ms: (inner.cfg.message_ttl_secs as i64).saturating_mul(1000),
            max_batch: inner.cfg.commit_max_batch,
            max_group: inner.cfg.max_group_members,
            delay: Duration::from_micros(inner.cfg.commit_delay_us),
        };
        tasks.push(Part::new(
            "chat-writer",
            writer.spawn(p.writer_rx, inner.shutdown.clone()),
        ));
        tasks.extend(
            inner
                .cluster
                .clone()
                .spawn(Arc::new(self.state.clone()), p.push_tx),
        );
        // The push task ends when its senders (the writer, the bus dispatcher) are gone.
        tasks.push(Part::spawn(
            "push",
            crate::push::run(
                p.push_rx,
                p.sender,
                inner.cluster.clone(),
                i64::from(inner.cfg.push.min_interval_secs) * 1000,
            ),
        ));
        tasks.push(Part::spawn("chat-purge", purge_loop(self.state.clone())));
        tasks.push(Part::spawn(
            "chat-device-check",
            device_check_loop(self.state.clone()),
        ));
        tasks.push(Part::spawn("last-seen", last_seen_loop(self.state.clone())));
        tasks
    }
}

async fn purge_loop(st: ChatState) {
    let inner = &st.0;
    let mut tick = tokio::time::interval(Duration::from_secs(u64::from(
        inner.cfg.purge_interval_secs,
    )));
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            _ = tick.tick() => match inner.store.purge(inner.clock.now_ms()).await {
                Ok(p) if p.messages + p.orphan_queue > 0 => {
                    tracing::info!(messages = p.messages, orphan_queue = p.orphan_queue, "chat: purged");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "chat: purge failed"),
            },
        }
    }
}

/// Disconnects sockets of devices that were removed, logged out or
/// re-registered since they connected (close 4003).
async fn device_check_loop(st: ChatState) {
    let inner = &st.0;
    let mut tick =
        tokio::time::interval(Duration::from_secs(u64::from(inner.cfg.device_check_secs)));
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => break,
            _ = tick.tick() => {
                let connected = inner.hub.connected();
                if connected.is_empty() {
                    continue;
                }
                match inner.store.stale_devices(&connected).await {
                    Ok(stale) => {
                        for d in stale {
                            tracing::info!(user_id = %d.user, device_id = d.device, "device revoked; closing its socket");
                            inner.hub.close_device(&d.user, d.device, d.generation, CloseCode::DeviceRevoked);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "chat: device check failed"),
                }
            }
        }
    }
}

async fn last_seen_loop(st: ChatState) {
    let inner = &st.0;
    let mut tick = tokio::time::interval(Duration::from_secs(u64::from(
        inner.cfg.presence_flush_secs,
    )));
    loop {
        let stop = tokio::select! {
            _ = inner.shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        if stop {
            // Sockets close on shutdown and touch their user; give them a moment.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let seen = inner.hub.take_dirty_seen();
        if let Err(e) = inner.store.save_last_seen(&seen).await {
            tracing::warn!(error = %e, "chat: saving last-seen times failed");
        }
        if stop {
            break;
        }
    }
}
