//! palaver's own sessions, for hosts that sign users in with a one-time code: the access token (a JWT palaver
//! signs) and the refresh token (opaque, stored hashed), handed out in the JSON body and as `HttpOnly` cookies.
//! A cookie only counts on a request whose `Origin` is one of `--cors-origins` named explicitly (`*` does not
//! count): no other site can use a browser's cookies on palaver (cross-site WebSocket hijacking, CSRF).

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite as CookieSameSite};
use sha2::{Digest, Sha256};

use super::TokenIssuer;
use crate::config::{Config, SameSite};

/// Cookie of the access token: sent with every request; it signs sockets in (from an allowed origin).
pub const ACCESS_COOKIE: &str = "palaver_access";
/// Cookie of the refresh token: sent only to the session endpoints.
pub const REFRESH_COOKIE: &str = "palaver_refresh";
/// Where the refresh cookie is sent.
const REFRESH_PATH: &str = "/api/v1/auth";

/// The session settings and the token issuer.
pub struct Sessions {
    pub issuer: TokenIssuer,
    pub refresh_ttl: chrono::Duration,
    /// See `--refresh-reuse-grace-secs`.
    pub reuse_grace: chrono::Duration,
    access_ttl_secs: i64,
    secure: bool,
    same_site: CookieSameSite,
    /// Origins whose requests may be signed in by cookie.
    origins: Vec<String>,
}

impl Sessions {
    /// `None` without `--token-secret`.
    pub fn from_config(config: &Config) -> Option<Self> {
        let issuer = TokenIssuer::from_config(config)?;
        Some(Self {
            issuer,
            refresh_ttl: chrono::Duration::seconds(config.refresh_token_ttl_secs.get().into()),
            reuse_grace: chrono::Duration::seconds(config.refresh_reuse_grace_secs.into()),
            access_ttl_secs: config.access_token_ttl_secs.get().into(),
            secure: config.cookie_secure,
            same_site: match config.cookie_same_site {
                SameSite::Lax => CookieSameSite::Lax,
                SameSite::Strict => CookieSameSite::Strict,
                SameSite::None => CookieSameSite::None,
            },
            origins: crate::config::named_origins(&config.cors_origins).collect(),
        })
    }

    /// Whether the request comes from an origin allowed to use palaver's cookies: its `Origin` is one of them,
    /// or it has none and the browser says it is same-origin (`Sec-Fetch-Site`; a same-origin `GET`, such as
    /// Engine.IO's polling handshake, carries no `Origin`).
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        match headers.get(header::ORIGIN).map(|o| o.to_str()) {
            Some(Ok(origin)) => self.origins.iter().any(|allowed| allowed == origin),
            Some(Err(_)) => false,
            None => headers
                .get("sec-fetch-site")
                .is_some_and(|site| site.as_bytes() == b"same-origin"),
        }
    }

    /// The value of one of palaver's cookies on the request.
    pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|c| c.name() == name)
            .map(|c| c.value().to_owned())
    }

    /// `Set-Cookie` values for a new pair of tokens.
    pub fn set_cookies(&self, access: &str, refresh: &str) -> [HeaderValue; 2] {
        let refresh_secs = self.refresh_ttl.num_seconds();
        [
            self.cookie_header(ACCESS_COOKIE, access, "/", self.access_ttl_secs),
            self.cookie_header(REFRESH_COOKIE, refresh, REFRESH_PATH, refresh_secs),
        ]
    }

    /// `Set-Cookie` values that clear both cookies.
    pub fn clear_cookies(&self) -> [HeaderValue; 2] {
        [
            self.cookie_header(ACCESS_COOKIE, "", "/", 0),
            self.cookie_header(REFRESH_COOKIE, "", REFRESH_PATH, 0),
        ]
    }

    fn cookie_header(
        &self,
        name: &'static str,
        value: &str,
        path: &'static str,
        max_age: i64,
    ) -> HeaderValue {
        let cookie = Cookie::build((name, value.to_owned()))
            .path(path)
            .http_only(true)
            .secure(self.secure)
            .same_site(self.same_site)
            .max_age(cookie::time::Duration::seconds(max_age))
            .build();
        // A token is base64url and the attributes are fixed: the header is always valid.
        HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A new refresh token: 32 random bytes, hex.
pub fn new_refresh_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// How a token or code is kept in the database: SHA-256, hex.
pub fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
