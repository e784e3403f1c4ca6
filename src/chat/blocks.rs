//! `user:block` and `user:unblock`: a user stops another user's direct messages and invitations.
//!
//! A block holds for DMs both ways (the blocker cannot write to the user they blocked either, until they unblock:
//! the conversation is closed, not one-sided) and for invitations from the blocked user. The blocked user is
//! refused with a reason that names no block (`forbidden`, "cannot be delivered", "cannot be invited"); the blocker
//! sees the DM as `blocked` in `rooms:list` and `session`. Blocks are per namespace and say nothing to anyone.

use serde::Deserialize;
use socketioxide::adapter::Adapter;

use super::{Call, Chat, Reply, payload};
use crate::{
    error::{ChatError, ChatResult},
    store::Author,
};

/// `{ user }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserOnly {
    user: String,
}

/// `user:block { user }` → `{}`: blocking someone already blocked changes nothing and is fine too.
pub async fn block<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let user = other_user("user:block", &mut call)?;
    call.chat
        .store
        .block(call.ns(), &call.conn.user.id, &user)
        .await?;
    Ok(Reply::Done {})
}

/// `user:unblock { user }` → `{}`; `not_found` when the user was not blocked.
pub async fn unblock<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let user = other_user("user:unblock", &mut call)?;
    if !call
        .chat
        .store
        .unblock(call.ns(), &call.conn.user.id, &user)
        .await?
    {
        return Err(ChatError::not_found(format!(
            "you have not blocked user {user:?}"
        )));
    }
    Ok(Reply::Done {})
}

/// The payload's user: a valid user id other than the caller's.
fn other_user<A: Adapter>(event: &str, call: &mut Call<A>) -> ChatResult<String> {
    let p: UserOnly = payload::parse(event, "{ user: \"user-id\" }", call.payload.take())?;
    payload::user_id(&p.user, "user")?;
    if p.user == call.conn.user.id {
        return Err(ChatError::bad_request(
            "you cannot block or unblock yourself",
        ));
    }
    Ok(p.user)
}

/// Refuses a DM between `from` and `to` when either blocked the other (`dm:send`, the server API's DMs).
pub async fn check_dm<A: Adapter>(
    chat: &Chat<A>,
    ns: &str,
    from: &str,
    to: &str,
) -> ChatResult<()> {
    match chat.store.blocker_between(ns, from, to).await? {
        None => Ok(()),
        Some(blocker) => Err(refusal(from, &blocker, to)),
    }
}

/// Refuses a message of `from` to a DM room when either of its users blocked the other (`message:send` to a
/// `dm:` room).
pub async fn check_dm_room<A: Adapter>(
    chat: &Chat<A>,
    ns: &str,
    room: &str,
    from: &str,
) -> ChatResult<()> {
    match chat.store.dm_blocker(ns, room, from).await? {
        None => Ok(()),
        // The other side is the blocker unless the sender is.
        Some(blocker) => Err(refusal(from, &blocker, &blocker)),
    }
}

/// Why a DM is refused: the blocker is told why; the blocked user only that it cannot be delivered.
fn refusal(from: &str, blocker: &str, peer: &str) -> ChatError {
    if blocker == from {
        ChatError::forbidden(
            "you blocked this user: unblock them (user:unblock) to send them direct messages",
        )
    } else {
        ChatError::forbidden(format!(
            "direct messages to user {peer:?} cannot be delivered"
        ))
    }
}

/// Refuses invitations from `inviter` when an invitee blocked them (`room:invite`, `room:create`'s members),
/// before anything is created or sent.
pub async fn check_invitees<A: Adapter>(
    chat: &Chat<A>,
    ns: &str,
    inviter: &str,
    invitees: &[Author],
) -> ChatResult<()> {
    if invitees.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = invitees.iter().map(|a| a.id.clone()).collect();
    let refused = chat.store.blocked_by(ns, inviter, &ids).await?;
    match refused.first() {
        None => Ok(()),
        Some(first) => Err(ChatError::forbidden(format!(
            "user {first:?} cannot be invited; leave them out"
        ))),
    }
}
