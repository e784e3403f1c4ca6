//! Who is on the other end of a socket: a JWT-verified user, the host service's user (its connect hook), or an
//! anonymous guest.

pub mod admin;
pub mod hook;
mod jwt;
mod names;
pub mod sessions;

use serde::{Deserialize, Serialize};

pub use admin::AdminClaim;
pub use hook::AuthHook;
pub use jwt::{JwtVerifier, TokenIssuer, Verified};
pub use names::{random_name, validate_display_name};

use crate::store::Author;

/// A connected user, as the `session` event and `room:notice` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub anonymous: bool,
}

impl User {
    pub fn author(&self) -> Author {
        Author {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }
}

/// The `auth` object a client passes to `io(url, { auth })`. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct AuthPayload {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub name: Option<serde_json::Value>,
}

/// The `auth` payload of a Socket.IO protocol v4 client (socket.io-client 2.x), whose CONNECT packet carries none:
/// the handshake's query parameters `token` and `name`, percent-decoded, stand for `auth.token` and `auth.name`
/// (the first of each counts; `EIO`, `transport`, `t` and any other parameter is ignored).
pub fn auth_from_query(query: Option<&str>) -> serde_json::Value {
    let mut auth = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if matches!(&*key, "token" | "name") && !auth.contains_key(&*key) {
            auth.insert(key.into_owned(), value.into_owned().into());
        }
    }
    auth.into()
}

/// Why a connection was refused. Sent as the `connect_error` message `unauthorized: <code>: <message>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unauthorized: {code}: {message}")]
pub struct AuthError {
    pub code: &'static str,
    pub message: String,
}

impl AuthError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Guest ids are minted here with this prefix; JWT subjects are whatever the identity provider says.
const GUEST_PREFIX: &str = "anon-";

/// Whether a user id belongs to a guest (its id lives only as long as its connection).
pub fn is_guest_id(id: &str) -> bool {
    id.starts_with(GUEST_PREFIX)
}

/// The sender of what the server API posts without `from`: no user the host names may take it.
pub const SYSTEM_ID: &str = "system";

/// Longest user id a host service may give (its connect hook, its server API calls).
const MAX_USER_ID: usize = 256;

/// A signed-in user that a host service names: a non-empty id without control characters that cannot pass for
/// a guest's, and a displayable name (trimmed). `Err` says what is wrong.
pub fn checked_user(id: String, name: &str) -> Result<User, String> {
    if id.is_empty() || id.len() > MAX_USER_ID || id.chars().any(char::is_control) {
        return Err(format!(
            "user id must be 1 to {MAX_USER_ID} bytes without control characters"
        ));
    }
    if is_guest_id(&id) {
        return Err(format!(
            "user id may not start with {GUEST_PREFIX:?}, palaver's guest prefix"
        ));
    }
    if id == SYSTEM_ID {
        return Err(format!(
            "user id {SYSTEM_ID:?} is the server API's own sender"
        ));
    }
    let name = validate_display_name("user name", name)?;
    Ok(User {
        id,
        name,
        anonymous: false,
    })
}

/// Whether an `auth` payload carries a token (which then decides who the connection is, whatever else is set).
pub fn has_token(payload: Option<&serde_json::Value>) -> bool {
    payload
        .and_then(|p| p.get("token"))
        .and_then(serde_json::Value::as_str)
        .is_some_and(|t| !t.is_empty())
}

/// Decides who a connection is, given its `auth` payload and whether the namespace admits guests.
pub fn authenticate(
    payload: Option<&serde_json::Value>,
    verifier: Option<&JwtVerifier>,
    anonymous_allowed: bool,
) -> Result<User, AuthError> {
    authenticate_until(payload, verifier, anonymous_allowed).map(|identity| identity.user)
}

/// Who a connection is: its user, until when its token stands (unix seconds; `None` without a token), and
/// whether the token makes the user a namespace admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: User,
    pub valid_until: Option<i64>,
    pub admin: bool,
}

impl Identity {
    /// A user without a token (a guest, or a user the host's connect hook names): never an admin.
    pub fn untimed(user: User) -> Self {
        Self {
            user,
            valid_until: None,
            admin: false,
        }
    }
}

/// [`authenticate`], with until when the connection's token stands and whether it makes the user an admin.
pub fn authenticate_until(
    payload: Option<&serde_json::Value>,
    verifier: Option<&JwtVerifier>,
    anonymous_allowed: bool,
) -> Result<Identity, AuthError> {
    let payload: AuthPayload = match payload {
        None | Some(serde_json::Value::Null) => AuthPayload::default(),
        // serde's message would quote the value, and a client that passes its token as the whole `auth` (a
        // string) would see it in the log of the refusal: the message names the JSON type instead.
        Some(value) => serde_json::from_value(value.clone()).map_err(|_| {
            let given = match value {
                serde_json::Value::Object(_) => "auth.token must be a string",
                serde_json::Value::String(_) => "a string was given",
                serde_json::Value::Array(_) => "an array was given",
                _ => "a number or boolean was given",
            };
            AuthError::new(
                "invalid_token",
                format!("auth must be an object like {{ token }} or {{ name }}; {given}"),
            )
        })?,
    };
    if let Some(token) = payload.token.as_deref().filter(|t| !t.is_empty()) {
        let verifier = verifier.ok_or_else(|| {
            AuthError::new(
                "not_configured",
                "this server has no JWT key configured; connect without a token",
            )
        })?;
        return verifier.verify_until(token).map(|v| Identity {
            user: v.user,
            valid_until: Some(v.valid_until),
            admin: v.admin,
        });
    }
    if !anonymous_allowed {
        return Err(AuthError::new(
            "missing_token",
            "sign in: this namespace needs auth.token (a JWT)",
        ));
    }
    let name = match payload.name {
        None | Some(serde_json::Value::Null) => random_name(),
        Some(serde_json::Value::String(name)) => validate_display_name("auth.name", &name)
            .map_err(|reason| AuthError::new("invalid_name", reason))?,
        Some(_) => {
            return Err(AuthError::new("invalid_name", "auth.name must be a string"));
        }
    };
    let guest = User {
        id: format!("{GUEST_PREFIX}{}", uuid::Uuid::new_v4().simple()),
        name,
        anonymous: true,
    };
    Ok(Identity::untimed(guest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hosts_user_is_checked_like_a_tokens() {
        let ok = checked_user("u-42".into(), "  Ada ").expect("valid");
        assert_eq!(
            (ok.id.as_str(), ok.name.as_str(), ok.anonymous),
            ("u-42", "Ada", false)
        );
        assert!(checked_user(String::new(), "Ada").is_err());
        assert!(
            checked_user("anon-1".into(), "Ada").is_err(),
            "a guest's id"
        );
        assert!(checked_user("u\u{0}".into(), "Ada").is_err());
        assert!(checked_user("u-1".into(), "   ").is_err());
    }

    #[test]
    fn guest_without_payload_gets_a_random_name() {
        let user = authenticate(None, None, true).expect("guest");
        assert!(user.anonymous);
        assert!(user.id.starts_with("anon-"));
        assert_eq!(user.name.split('-').count(), 3, "{}", user.name);
    }

    #[test]
    fn guest_name_is_trimmed_and_checked() {
        let user = authenticate(Some(&json!({ "name": "  ada  " })), None, true).expect("guest");
        assert_eq!(user.name, "ada");
        let err = authenticate(Some(&json!({ "name": "   " })), None, true).expect_err("blank");
        assert_eq!(err.code, "invalid_name");
        let err = authenticate(Some(&json!({ "name": 7 })), None, true).expect_err("number");
        assert_eq!(err.code, "invalid_name");
    }

    #[test]
    fn guests_can_be_refused() {
        let err = authenticate(None, None, false).expect_err("refused");
        assert_eq!(err.code, "missing_token");
        assert!(err.to_string().starts_with("unauthorized: missing_token: "));
    }

    #[test]
    fn query_stands_for_auth() {
        let q =
            "EIO=3&transport=polling&t=Nx1&token=a.b%2Bc&name=Zo%C3%AB+L%20%F0%9F%A6%A6&extra=1";
        assert_eq!(
            auth_from_query(Some(q)),
            json!({ "token": "a.b+c", "name": "Zoë L 🦦" })
        );
        assert_eq!(
            auth_from_query(Some("name=first&name=second&token=&x")),
            json!({ "name": "first", "token": "" })
        );
        assert_eq!(
            auth_from_query(Some("EIO=3&transport=websocket")),
            json!({})
        );
        assert_eq!(auth_from_query(None), json!({}));
        let user = authenticate(Some(&auth_from_query(Some("name=%20ada%20"))), None, true)
            .expect("guest");
        assert_eq!(user.name, "ada");
        let err = authenticate(Some(&auth_from_query(Some("token=x.y.z"))), None, true)
            .expect_err("no key");
        assert_eq!(err.code, "not_configured");
    }

    #[test]
    fn a_malformed_auth_is_refused_without_repeating_it() {
        for auth in [
            json!("eyJhbGciOiJIUzI1NiJ9.s3cret"),
            json!({ "token": ["eyJ.s3cret"] }),
        ] {
            let err = authenticate(Some(&auth), None, true).expect_err("malformed");
            assert_eq!(err.code, "invalid_token");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn token_without_configured_key_is_refused() {
        let err = authenticate(Some(&json!({ "token": "a.b.c" })), None, true).expect_err("no key");
        assert_eq!(err.code, "not_configured");
    }
}
