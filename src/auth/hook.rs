//! The host service's sign-in endpoints: the connect hook, which decides who a connection without a token is
//! (`--auth-hook-url`), and the code exchange, which redeems a one-time code for its user
//! (`--auth-exchange-url`). Both are called with the bearer `--auth-hook-secret`.
//!
//! palaver POSTs what the connection carries (namespace, `auth`, query, a few headers, address) to the host with
//! `Authorization: Bearer <--auth-hook-secret>`. `200 { user: { id, name } }` admits that user; `401`/`403`
//! refuses with the host's reason; anything else (a timeout, a `5xx`, an unreachable host, an answer that is not
//! understood) refuses with a retryable reason. A connection is never admitted as a guest because the host failed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::Semaphore;

use super::{AuthError, User};
use crate::config::{Config, redact_url};

/// The headers of the handshake the host is shown: what identifies a browser session, nothing else.
pub const FORWARDED_HEADERS: [&str; 4] = ["cookie", "authorization", "origin", "user-agent"];

/// A client for the host's sign-in endpoints, shared by every connection.
pub struct AuthHook {
    client: reqwest::Client,
    /// The connect hook, if configured.
    url: Option<String>,
    /// The code exchange, if configured.
    exchange_url: Option<String>,
    secret: String,
    /// Calls in flight, at most `--auth-hook-concurrency`: a connect storm must not become a storm on the host.
    permits: Semaphore,
    /// The same bound for code exchanges, apart: a flood of made-up codes must not keep connections waiting.
    exchange_permits: Semaphore,
    timeout: Duration,
}

/// What the host is told of a connection.
#[derive(Serialize)]
pub struct HookRequest<'a> {
    pub namespace: &'a str,
    pub auth: Option<&'a Json>,
    /// The handshake's query parameters (without Engine.IO's own `EIO`, `transport`, `t` and `sid`).
    pub query: serde_json::Map<String, Json>,
    pub headers: serde_json::Map<String, Json>,
    pub address: Option<String>,
}

/// The handshake's query parameters for the host, without Engine.IO's own (the first of each name counts).
pub fn query_of(query: Option<&str>) -> serde_json::Map<String, Json> {
    let mut params = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !matches!(&*key, "EIO" | "transport" | "t" | "sid") && !params.contains_key(&*key) {
            params.insert(key.into_owned(), value.into_owned().into());
        }
    }
    params
}

/// The handshake's [`FORWARDED_HEADERS`] that it has, as text.
pub fn headers_of(headers: &http::HeaderMap) -> serde_json::Map<String, Json> {
    FORWARDED_HEADERS
        .iter()
        .filter_map(|&name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.to_owned(), Json::from(value)))
        })
        .collect()
}

#[derive(Deserialize)]
struct Admitted {
    user: HookUser,
}

#[derive(Deserialize)]
struct HookUser {
    id: String,
    name: String,
}

/// A refusal's body: `{ reason }`, `{ message }` or `{ error: { message } }`, whichever the host writes.
#[derive(Deserialize, Default)]
struct Refusal {
    reason: Option<String>,
    message: Option<String>,
    error: Option<RefusalError>,
}

#[derive(Deserialize)]
struct RefusalError {
    message: Option<String>,
}

impl std::fmt::Debug for AuthHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthHook")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AuthHook {
    /// The hook of `--auth-hook-url`, if one is configured.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let (url, exchange_url) = (
            config.auth_hook_url.clone(),
            config.auth_exchange_url.clone(),
        );
        if url.is_none() && exchange_url.is_none() {
            return Ok(None);
        }
        let secret = config.auth_hook_secret.clone().ok_or_else(|| {
            "--auth-hook-url and --auth-exchange-url need --auth-hook-secret (env PALAVER_AUTH_HOOK_SECRET): the \
             host must be able to tell palaver's calls from anyone else's"
                .to_owned()
        })?;
        let timeout = Duration::from_millis(config.auth_hook_timeout_ms.get().into());
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("--auth-hook-url: cannot build an HTTP client: {e}"))?;
        Ok(Some(Self {
            client,
            url,
            exchange_url,
            secret,
            permits: Semaphore::new(config.auth_hook_concurrency.get() as usize),
            exchange_permits: Semaphore::new(config.auth_hook_concurrency.get() as usize),
            timeout,
        }))
    }

    /// Whether the host decides who connections without a token are.
    pub fn admits(&self) -> bool {
        self.url.is_some()
    }

    /// Asks the host who this connection is.
    pub async fn admit(&self, request: &HookRequest<'_>) -> Result<User, AuthError> {
        let Some(url) = &self.url else {
            return Err(unavailable());
        };
        self.ask(url, request, &self.permits).await
    }

    /// Redeems a one-time code with the host: its user, `refused` (the host's `401`/`403`), or `unavailable`.
    pub async fn redeem(&self, code: &str) -> Result<User, AuthError> {
        let Some(url) = &self.exchange_url else {
            return Err(AuthError::new(
                "not_configured",
                "this server has no --auth-exchange-url",
            ));
        };
        let body = serde_json::json!({ "code": code });
        self.ask(url, &body, &self.exchange_permits).await
    }

    /// POSTs `body` to the host, within the concurrency bound and the timeout (the wait for a free call counts).
    async fn ask(
        &self,
        url: &str,
        body: &impl Serialize,
        permits: &Semaphore,
    ) -> Result<User, AuthError> {
        let call = async {
            let _permit = permits.acquire().await.map_err(|_| unavailable())?;
            self.call(url, body).await
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(url = %redact_url(url), "host sign-in: no answer in time");
                Err(unavailable())
            })
    }

    async fn call(&self, url: &str, body: &impl Serialize) -> Result<User, AuthError> {
        let response = self
            .client
            .post(url)
            .bearer_auth(&self.secret)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                let e = e.without_url();
                tracing::warn!(url = %redact_url(url), error = %e, "host sign-in: call failed");
                unavailable()
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let refusal: Refusal = response.json().await.unwrap_or_default();
            let reason = refusal
                .reason
                .or(refusal.message)
                .or(refusal.error.and_then(|e| e.message))
                .unwrap_or_else(|| "the host service refused".to_owned());
            return Err(AuthError::new("refused", reason));
        }
        if !status.is_success() {
            tracing::warn!(url = %redact_url(url), %status, "host sign-in: unexpected status");
            return Err(unavailable());
        }
        let admitted: Admitted = response.json().await.map_err(|e| {
            tracing::warn!(url = %redact_url(url), error = %e.without_url(), "host sign-in: answer is not {{ user: {{ id, name }} }}");
            unavailable()
        })?;
        super::checked_user(admitted.user.id, &admitted.user.name).map_err(|reason| {
            tracing::warn!(url = %redact_url(url), %reason, "host sign-in: unusable user");
            unavailable()
        })
    }
}

fn unavailable() -> AuthError {
    AuthError::new(
        "unavailable",
        "the sign-in service did not answer; reconnect shortly",
    )
}
