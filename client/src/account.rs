//! An account on one device: the API client plus credentials, refreshed before
//! they expire and handed to a callback whenever they change (so apps and the
//! CLI can store them).

use crate::Error;
use crate::api::{Api, Credentials};
use std::sync::{Arc, Mutex};

/// Called with new credentials after every refresh.
pub type CredentialsHook = Arc<dyn Fn(&Credentials) + Send + Sync>;

/// An account's device credentials on a server.
#[derive(Clone)]
pub struct Account {
    api: Api,
    creds: Arc<Mutex<Credentials>>,
    refreshing: Arc<tokio::sync::Mutex<()>>,
    hook: Option<CredentialsHook>,
}

/// Refresh this long before the access token expires.
const REFRESH_MARGIN_SECS: i64 = 60;

impl Account {
    /// Wraps stored credentials.
    pub fn new(api: Api, creds: Credentials) -> Self {
        Self {
            api,
            creds: Arc::new(Mutex::new(creds)),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
            hook: None,
        }
    }

    /// Calls `hook` whenever the credentials change.
    pub fn on_credentials_change(mut self, hook: CredentialsHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The API client.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The current credentials.
    pub fn credentials(&self) -> Credentials {
        self.creds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A valid access token, refreshed first when it is about to expire.
    pub async fn token(&self) -> Result<String, Error> {
        let c = self.credentials();
        if c.access_expires_at - REFRESH_MARGIN_SECS > now_secs() {
            return Ok(c.access_token);
        }
        self.refresh_if(&c.access_token).await
    }

    /// Refreshes now (after the server said the token expired).
    pub async fn force_refresh(&self) -> Result<String, Error> {
        let current = self.credentials().access_token;
        self.refresh_if(&current).await
    }

    /// Refreshes unless another task already replaced `stale` (refresh tokens
    /// are single use: two concurrent refreshes would revoke the device).
    async fn refresh_if(&self, stale: &str) -> Result<String, Error> {
        let _guard = self.refreshing.lock().await;
        let c = self.credentials();
        if c.access_token != stale {
            return Ok(c.access_token);
        }
        let fresh = self.api.refresh(&c.refresh_token).await?;
        *self.creds.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        if let Some(h) = &self.hook {
            h(&fresh);
        }
        Ok(fresh.access_token)
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Registers `number` on this device: asks for a code, gets it from
/// `code_for` (a prompt, an SMS outbox, a test hook), verifies it and creates
/// the account.
pub async fn register<F, Fut>(
    api: &Api,
    number: &str,
    device_name: &str,
    code_for: F,
) -> Result<Credentials, Error>
where
    F: FnOnce(crate::api::RegSession) -> Fut,
    Fut: std::future::Future<Output = Result<String, Error>>,
{
    let session = api.start_registration(number).await?;
    let id = session.session_id.clone();
    let code = code_for(session).await?;
    api.verify_code(&id, code.trim()).await?;
    api.create_account(&id, device_name).await
}

/// Reads the code for `session_id` from an SMS outbox file
/// (`<data-dir>/outbox/sms.jsonl` of an embedded server), waiting up to 10 s.
pub async fn code_from_outbox(path: &std::path::Path, session_id: &str) -> Result<String, Error> {
    for _ in 0..100 {
        if let Ok(text) = tokio::fs::read_to_string(path).await {
            for line in text.lines().rev() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                    && v["session_id"] == session_id
                    && let Some(code) = v["code"].as_str()
                {
                    return Ok(code.to_owned());
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(Error::Config(format!(
        "no code for session {session_id} in {}",
        path.display()
    )))
}
