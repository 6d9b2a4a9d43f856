//! The `providers` backend: FCM for `fcm` tokens, APNs for `apns` tokens (and
//! the PushKit token of an iOS device for calls), with the providers' own
//! credentials. Each push runs as its own task, at most `max_in_flight` at
//! once, so one slow or rate-limited push does not hold the others; what the
//! provider answers is acted on here: a dead token is forgotten, a refused one
//! is logged once, refused credentials are logged as the configuration error
//! they are.

use super::{PushError, PushNotice, PushReason, PushSender};
use crate::config::PushConfig;
use crate::store::{DeviceRef, MessageStore, PushToken};
use async_trait::async_trait;
use natter_proto::{DeviceId, UserId};
use natter_providers::apns::{ApnsClient, Route};
use natter_providers::fcm::FcmClient;
use natter_providers::{Delivery, PushKind, Report};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Platforms a device may register with this backend.
pub const PLATFORMS: [&str; 2] = ["fcm", "apns"];

/// Distinct refused tokens remembered for "log once"; past it the memory
/// starts over (a token may then be logged again).
const REMEMBERED_REFUSALS: usize = 100_000;
/// Refused credentials are logged at most this often per provider.
const AUTH_LOG_EVERY: Duration = Duration::from_secs(60);

/// Sends through FCM and APNs.
pub struct ProviderPush {
    inner: Arc<Inner>,
    in_flight: Arc<Semaphore>,
}

struct Inner {
    store: Arc<dyn MessageStore>,
    fcm: Option<FcmClient>,
    apns: Option<ApnsClient>,
    /// Fingerprints of tokens whose refusal was logged.
    refused: Mutex<HashSet<u64>>,
    /// When refused credentials were last logged, per provider.
    auth_logged: Mutex<[Option<Instant>; 2]>,
}

/// One request to make.
struct Job {
    provider: Provider,
    user: UserId,
    device: DeviceId,
    token: String,
    kind: PushKind,
    route: Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Fcm,
    Apns,
}

impl Provider {
    fn label(self) -> &'static str {
        match self {
            Provider::Fcm => "fcm",
            Provider::Apns => "apns",
        }
    }
}

impl ProviderPush {
    /// Reads the providers' credentials; a missing or unreadable key fails
    /// here, at start-up, naming the setting.
    pub fn new(cfg: &PushConfig, store: Arc<dyn MessageStore>) -> Result<Self, String> {
        let fcm = cfg
            .fcm
            .is_configured()
            .then(|| FcmClient::new(&cfg.fcm, "chat.push.fcm"))
            .transpose()?;
        let apns = cfg
            .apns
            .is_configured()
            .then(|| ApnsClient::new(&cfg.apns, "chat.push.apns"))
            .transpose()?;
        if let Some(f) = &fcm {
            tracing::info!(project = f.project_id(), "push: FCM configured");
        }
        if apns.is_some() {
            tracing::info!(
                bundle = %cfg.apns.bundle_id,
                environment = ?cfg.apns.environment,
                "push: APNs configured"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                fcm,
                apns,
                refused: Mutex::new(HashSet::new()),
                auth_logged: Mutex::new([None, None]),
            }),
            in_flight: Arc::new(Semaphore::new(cfg.max_in_flight)),
        })
    }
}

/// The request for a device's registration, or `None` when this server has
/// no provider for its platform.
fn job_for(dev: &DeviceRef, t: &PushToken, kind: PushKind) -> Option<Job> {
    let (provider, token, route) = match (t.platform.as_str(), kind, &t.voip_token) {
        ("fcm", _, _) => (Provider::Fcm, t.token.clone(), Route::Alert),
        ("apns", PushKind::Call, Some(voip)) => (Provider::Apns, voip.clone(), Route::Voip),
        ("apns", _, _) => (Provider::Apns, t.token.clone(), Route::Alert),
        _ => return None,
    };
    Some(Job {
        provider,
        user: dev.user.clone(),
        device: dev.device,
        token,
        kind,
        route,
    })
}

/// A short, stable, non-reversible name for a token in logs (tokens are
/// credentials of sorts: whoever has one can push to the device).
fn fingerprint(token: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    token.hash(&mut h);
    h.finish()
}

impl Inner {
    async fn run(&self, job: Job) {
        let report = match job.provider {
            Provider::Fcm => match &self.fcm {
                Some(c) => c.send(&job.token, job.kind).await,
                None => return,
            },
            Provider::Apns => match &self.apns {
                Some(c) => c.send(&job.token, job.kind, job.route).await,
                None => return,
            },
        };
        self.settle(&job, report).await;
    }

    async fn settle(&self, job: &Job, report: Report) {
        let provider = job.provider.label();
        metrics::counter!("chat_push_provider_total", "provider" => provider, "result" => report.delivery.label())
            .increment(1);
        if report.attempts > 1 {
            metrics::counter!("chat_push_provider_retries_total", "provider" => provider)
                .increment(u64::from(report.attempts - 1));
        }
        let token_fp = format!("{:016x}", fingerprint(&job.token));
        match report.delivery {
            Delivery::Delivered => {
                tracing::debug!(user_id = %job.user, device_id = job.device, provider, kind = job.kind.as_str(), "pushed");
            }
            Delivery::Unregistered => {
                match self
                    .store
                    .forget_dead_push_token(&job.user, job.device, &job.token)
                    .await
                {
                    Ok(_) => tracing::info!(
                        user_id = %job.user, device_id = job.device, provider, token = %token_fp,
                        "the provider called the push token dead; forgotten"
                    ),
                    Err(e) => tracing::warn!(
                        user_id = %job.user, device_id = job.device, provider, error = %e,
                        "a dead push token could not be forgotten"
                    ),
                }
            }
            Delivery::Rejected(why) => {
                let first = {
                    let mut seen = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                    if seen.len() >= REMEMBERED_REFUSALS {
                        seen.clear();
                    }
                    seen.insert(fingerprint(&job.token))
                };
                if first {
                    tracing::warn!(
                        user_id = %job.user, device_id = job.device, provider, token = %token_fp, reason = %why,
                        "the provider refused a push to this token (logged once per token)"
                    );
                }
            }
            Delivery::AuthFailed(why) => {
                let due = {
                    let mut at = self.auth_logged.lock().unwrap_or_else(|p| p.into_inner());
                    let slot = &mut at[job.provider as usize];
                    let due = slot.is_none_or(|t| t.elapsed() >= AUTH_LOG_EVERY);
                    if due {
                        *slot = Some(Instant::now());
                    }
                    due
                };
                if due {
                    tracing::error!(provider, reason = %why, "push credentials refused: check [chat.push.{provider}] (logged at most once a minute)");
                }
            }
            Delivery::Failed(why) => {
                tracing::warn!(user_id = %job.user, device_id = job.device, provider, reason = %why, "push failed");
            }
        }
    }
}

#[async_trait]
impl PushSender for ProviderPush {
    async fn send(&self, batch: &[PushNotice]) -> Result<(), PushError> {
        let devices: Vec<DeviceRef> = batch.iter().map(PushNotice::device).collect();
        let tokens = self
            .inner
            .store
            .push_tokens(&devices)
            .await
            .map_err(|e| PushError::Store(e.to_string()))?;
        // One push per device and reason: a device may be in the batch for a
        // message and for a call, and each wakes it differently.
        let mut wanted: Vec<(&DeviceRef, PushKind)> = Vec::new();
        for (n, d) in batch.iter().zip(&devices) {
            let kind = match n.reason {
                PushReason::Message => PushKind::Message,
                PushReason::Call => PushKind::Call,
            };
            if !wanted.iter().any(|(w, k)| *w == d && *k == kind) {
                wanted.push((d, kind));
            }
        }
        for (dev, kind) in wanted {
            let Some((_, token)) = tokens.iter().find(|(t, _)| t == dev) else {
                continue; // no registration for this device (generation)
            };
            let Some(job) = job_for(dev, token, kind) else {
                metrics::counter!("chat_push_provider_total", "provider" => "none", "result" => "no_provider")
                    .increment(1);
                continue;
            };
            // Waits while max_in_flight pushes are out: back-pressure into the queue.
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                break;
            };
            let inner = self.inner.clone();
            tokio::spawn(async move {
                inner.run(job).await;
                drop(permit);
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DeviceRef {
        DeviceRef {
            user: UserId::new("u"),
            device: 2,
            generation: 1,
        }
    }

    #[test]
    fn calls_to_ios_go_to_the_pushkit_token_when_there_is_one() {
        let ios = PushToken {
            platform: "apns".into(),
            token: "aa".into(),
            voip_token: Some("bb".into()),
        };
        let j = job_for(&dev(), &ios, PushKind::Call).unwrap();
        assert_eq!(
            (j.provider, j.token.as_str(), j.route),
            (Provider::Apns, "bb", Route::Voip)
        );
        let j = job_for(&dev(), &ios, PushKind::Message).unwrap();
        assert_eq!((j.token.as_str(), j.route), ("aa", Route::Alert));
        let no_voip = PushToken {
            voip_token: None,
            ..ios
        };
        let j = job_for(&dev(), &no_voip, PushKind::Call).unwrap();
        assert_eq!((j.token.as_str(), j.route), ("aa", Route::Alert));
        let android = PushToken {
            platform: "fcm".into(),
            token: "f".into(),
            voip_token: None,
        };
        assert_eq!(
            job_for(&dev(), &android, PushKind::Call).unwrap().provider,
            Provider::Fcm
        );
        let other = PushToken {
            platform: "huawei".into(),
            ..android
        };
        assert!(job_for(&dev(), &other, PushKind::Message).is_none());
    }
}
