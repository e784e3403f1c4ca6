//! `reaction:add` and `reaction:remove`: a user's emoji on a message, counted per emoji. Messages carry
//! `reactions: [{ emoji, count, me }]`; each change goes to the room as `reaction`.

use serde::Serialize;
use socketioxide::adapter::Adapter;

use super::{Call, Reply, payload, presence::in_room, room_key, rooms};
use crate::{
    auth::User,
    error::{ChatError, ChatResult},
    store::{MAX_EMOJI_PER_MESSAGE, Reacted},
};

/// `reaction:add { room, seq, emoji }` → `{}`.
pub async fn add<A: Adapter>(call: Call<A>) -> ChatResult<Reply> {
    react(call, true).await
}

/// `reaction:remove { room, seq, emoji }` → `{}`.
pub async fn remove<A: Adapter>(call: Call<A>) -> ChatResult<Reply> {
    react(call, false).await
}

/// `reaction { room, seq, emoji, user, added, rev }`, to the room.
#[derive(Serialize)]
struct ReactionEvent<'a> {
    room: &'a str,
    seq: i64,
    emoji: &'a str,
    user: &'a User,
    added: bool,
    rev: i64,
}

/// Adds or removes the user's reaction and, if that changed anything, tells the rest of the room. Adding a
/// reaction the user has, or removing one they do not, answers `{}` and tells nobody.
async fn react<A: Adapter>(mut call: Call<A>, added: bool) -> ChatResult<Reply> {
    let event = if added {
        "reaction:add"
    } else {
        "reaction:remove"
    };
    let p: payload::Reaction = payload::parse(
        event,
        "{ room: \"general\", seq: 41, emoji: \"👍\" }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let seq = payload::seq(p.seq, "seq")?;
    let emoji = payload::emoji(&p.emoji)?;
    if !in_room(&call.socket, room) {
        return Err(rooms::not_in_room(room));
    }
    let user = &call.conn.user;
    let outcome = call
        .chat
        .store
        .react(call.ns(), room, seq, &user.id, emoji, added)
        .await?;
    let rev = match outcome {
        Reacted::Changed { rev } => rev,
        Reacted::Unchanged => return Ok(Reply::Done {}),
        Reacted::NoMessage => {
            return Err(ChatError::not_found(format!(
                "room {room:?} has no message {seq} (or it was deleted)"
            )));
        }
        Reacted::TooMany => {
            return Err(ChatError::too_large(format!(
                "message {seq} already carries {MAX_EMOJI_PER_MESSAGE} different emoji, the most allowed"
            )));
        }
    };
    let reaction = ReactionEvent {
        room,
        seq,
        emoji,
        user,
        added,
        rev,
    };
    let key = room_key(room);
    let socket = &call.socket;
    crate::cluster::deliver(
        call.chat.redis.as_ref(),
        || socket.to(key.clone()),
        "reaction",
        &reaction,
    )
    .await;
    Ok(Reply::Done {})
}
