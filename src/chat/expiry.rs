//! A socket's token running out: `session:expiring` ahead of time, `session:refresh { token }` to go on with a
//! fresh token of the same user, and otherwise a disconnect at expiry with `session:expired` saying why.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use socketioxide::{adapter::Adapter, extract::SocketRef};
use tokio::sync::watch;

use super::{Call, Conn, Reply, payload};
use crate::error::{ChatError, ChatResult};

/// Until when (unix seconds) a socket's token stands: `None` for a guest, or a user the host's connect hook
/// named (no token to run out).
pub type ValidUntil = watch::Sender<Option<i64>>;

/// Watches the socket's token until the socket goes: tells it ahead of expiry, and disconnects it at expiry
/// unless a refresh moved the deadline.
///
/// Only in palaver's own namespaces: a profile namespace serves the app's events, among which there is no
/// `session:refresh`, so its sockets keep the old behaviour (a token counts when the socket connects).
pub fn watch<A: Adapter>(socket: SocketRef<A>, conn: &Arc<Conn>, notice_secs: i64) {
    let mut deadline = conn.valid_until.subscribe();
    if deadline.borrow().is_none() || conn.ns.profile.is_some() {
        return;
    }
    tokio::spawn(async move {
        loop {
            let Some(until) = *deadline.borrow_and_update() else {
                return;
            };
            match wait_until(until - notice_secs, &mut deadline).await {
                Wait::Came => {}
                Wait::Moved => continue,
                Wait::Gone => return,
            }
            if !socket.connected() {
                return;
            }
            let expires_at = chrono::DateTime::from_timestamp(until, 0).unwrap_or_default();
            if let Err(e) = socket.emit("session:expiring", &json!({ "expiresAt": expires_at })) {
                tracing::debug!(socket = %socket.id, error = %e, "could not send session:expiring");
            }
            match wait_until(until, &mut deadline).await {
                Wait::Came => {}
                Wait::Moved => continue,
                Wait::Gone => return,
            }
            if !socket.connected() {
                return;
            }
            tracing::info!(socket = %socket.id, "token expired: disconnecting");
            let why = json!({
                "reason": "your session expired; sign in again (or send session:refresh before it runs out)"
            });
            if let Err(e) = socket.emit("session:expired", &why) {
                tracing::debug!(socket = %socket.id, error = %e, "could not send session:expired");
            }
            // The disconnect packet follows the event on the same connection.
            let _ = socket.disconnect();
            return;
        }
    });
}

/// How a wait for a deadline ended.
enum Wait {
    /// The time came.
    Came,
    /// The deadline changed first: a refresh, or the socket going (which sets it to `None`).
    Moved,
    /// The connection's state is gone.
    Gone,
}

/// Sleeps until the unix time `at`, unless the deadline changes first.
async fn wait_until(at: i64, deadline: &mut watch::Receiver<Option<i64>>) -> Wait {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let wait_ms = at.saturating_mul(1000).saturating_sub(now_ms).max(0);
    let sleep = tokio::time::sleep(std::time::Duration::from_millis(wait_ms.unsigned_abs()));
    tokio::select! {
        () = sleep => Wait::Came,
        changed = deadline.changed() => match changed {
            Ok(()) => Wait::Moved,
            Err(_) => Wait::Gone,
        },
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refresh {
    token: String,
}

/// `session:refresh { token }` → `{ expiresAt }`: a fresh token of the same user moves the socket's deadline.
pub async fn refresh<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: Refresh = payload::parse(
        "session:refresh",
        "{ token: \"<a fresh access token>\" }",
        call.payload.take(),
    )?;
    if call.conn.valid_until.borrow().is_none() {
        return Err(ChatError::bad_request(
            "this connection was not signed in with a token; there is nothing to refresh",
        ));
    }
    let verifier = call
        .chat
        .verifier
        .as_ref()
        .ok_or_else(|| ChatError::bad_request("this server verifies no tokens"))?;
    let verified = verifier
        .verify_until(&p.token)
        .map_err(|e| ChatError::unauthorized(format!("{}: {}", e.code, e.message)))?;
    if verified.user.id != call.conn.user.id {
        return Err(ChatError::forbidden(
            "the token is another user's; a connection keeps its user",
        ));
    }
    call.conn
        .valid_until
        .send_replace(Some(verified.valid_until));
    call.conn.set_admin(verified.admin);
    Ok(Reply::Refreshed {
        expires_at: chrono::DateTime::from_timestamp(verified.valid_until, 0).unwrap_or_default(),
    })
}
