//! `message:edit` and `message:delete`: the author changes their message within the edit window, the author or a
//! moderator of the room (its owner, its moderators, a namespace admin) deletes it. A deleted message stays in history as a tombstone, so seq stays
//! gap-free. Who may do what is decided by [`may_edit`] and [`may_delete`], plain functions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use socketioxide::{adapter::Adapter, extract::SocketRef};

use super::{Call, Chat, Reply, moderation, payload, presence::in_room, room_key, rooms};
use crate::{
    error::{ChatError, ChatResult},
    store::Message,
};

/// May `actor` replace the text of `message` now? The author may, within `window` of sending it (`None`: no
/// limit); a deleted message cannot be edited (`not_found`: it has no text any more).
pub fn may_edit(
    actor: &str,
    message: &Message,
    now: DateTime<Utc>,
    window: Option<chrono::Duration>,
) -> ChatResult<()> {
    if message.deleted {
        return Err(deleted(message));
    }
    if message.from.id != actor {
        return Err(ChatError::forbidden(format!(
            "message {} of room {:?} is someone else's; only its author may edit it",
            message.seq, message.room
        )));
    }
    if let Some(window) = window
        && now - message.at > window
    {
        return Err(ChatError::forbidden(format!(
            "message {} can no longer be edited: messages can be edited for {} seconds after sending",
            message.seq,
            window.num_seconds()
        )));
    }
    Ok(())
}

/// May `actor` delete `message`? Its author may, and so may a moderator of the room (`moderator`: the actor may
/// moderate it, see [`super::moderation::may_moderate`]).
pub fn may_delete(actor: &str, message: &Message, moderator: bool) -> ChatResult<()> {
    if message.from.id == actor || moderator {
        return Ok(());
    }
    Err(ChatError::forbidden(format!(
        "message {} of room {:?} is someone else's; only its author or a moderator may delete it",
        message.seq, message.room
    )))
}

fn deleted(message: &Message) -> ChatError {
    ChatError::not_found(format!(
        "message {} of room {:?} was deleted",
        message.seq, message.room
    ))
}

fn no_such_message(room: &str, seq: i64) -> ChatError {
    ChatError::not_found(format!("room {room:?} has no message {seq}"))
}

/// The message `seq` of a room this socket is in, as stored.
async fn find<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    ns: &str,
    room: &str,
    seq: i64,
) -> ChatResult<Message> {
    if !in_room(socket, room) {
        return Err(rooms::not_in_room(room));
    }
    chat.store
        .message(ns, room, seq)
        .await?
        .ok_or_else(|| no_such_message(room, seq))
}

/// `message:edit { room, seq, text }` → `{ message }`, and `message:updated { message }` to the rest of the room.
/// The message carries its new `text`, `editedAt` and `rev`, not its reactions (they do not change).
pub async fn edit<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::MessageEdit = payload::parse(
        "message:edit",
        "{ room: \"general\", seq: 41, text: \"fixed\" }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let seq = payload::seq(p.seq, "seq")?;
    let text = payload::text(&p.text, call.conn.ns.max_message_length)?;
    let (chat, conn) = (&call.chat, &call.conn);
    let found = find(chat, &call.socket, call.ns(), room, seq).await?;
    let now = crate::store::now();
    may_edit(&conn.user.id, &found, now, chat.limits.edit_window)?;
    if found.text == text {
        // Nothing to change: no new revision, nothing to tell.
        return Ok(Reply::Sent { message: found });
    }
    let message = chat
        .store
        .edit_message(call.ns(), room, seq, &conn.user.id, text, now)
        .await?
        .ok_or_else(|| deleted(&found))?;
    #[derive(Serialize)]
    struct Updated<'a> {
        message: &'a Message,
    }
    let key = room_key(room);
    let socket = &call.socket;
    crate::cluster::deliver(
        chat.redis.as_ref(),
        || socket.to(key.clone()),
        "message:updated",
        &Updated { message: &message },
    )
    .await;
    Ok(Reply::Sent { message })
}

/// `message:delete { room, seq }` → `{}`, and `message:deleted { room, seq, rev }` to the rest of the room.
/// Deleting a deleted message changes nothing and answers `{}`. The author's own delete reads no role: only
/// someone else's message asks whether the caller moderates the room.
pub async fn delete<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::RoomSeq = payload::parse(
        "message:delete",
        "{ room: \"general\", seq: 41 }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let seq = payload::seq(p.seq, "seq")?;
    let chat = &call.chat;
    let found = find(chat, &call.socket, call.ns(), room, seq).await?;
    let moderator = found.from.id != call.conn.user.id
        && moderation::may_moderate(chat, &call.conn, room).await?;
    may_delete(&call.conn.user.id, &found, moderator)?;
    if found.deleted {
        return Ok(Reply::Done {});
    }
    let now = crate::store::now();
    let Some(rev) = chat.store.delete_message(call.ns(), room, seq, now).await? else {
        // Deleted meanwhile, by another socket: that delete told the room.
        return Ok(Reply::Done {});
    };
    #[derive(Serialize)]
    struct Deleted<'a> {
        room: &'a str,
        seq: i64,
        rev: i64,
    }
    let key = room_key(room);
    let socket = &call.socket;
    crate::cluster::deliver(
        chat.redis.as_ref(),
        || socket.to(key.clone()),
        "message:deleted",
        &Deleted { room, seq, rev },
    )
    .await;
    Ok(Reply::Done {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::ErrorCode, store::Author};

    fn message(from: &str, at: DateTime<Utc>) -> Message {
        Message {
            id: "1".into(),
            room: "r".into(),
            seq: 7,
            from: Author {
                id: from.into(),
                name: from.into(),
            },
            text: "hello".into(),
            at,
            ..Default::default()
        }
    }

    #[test]
    fn only_the_author_edits_within_the_window() {
        let now = crate::store::now();
        let window = Some(chrono::Duration::minutes(15));
        let fresh = message("ann", now - chrono::Duration::minutes(14));
        assert_eq!(may_edit("ann", &fresh, now, window), Ok(()));
        let code = |r: ChatResult<()>| r.map_err(|e| e.code);
        assert_eq!(
            code(may_edit("bob", &fresh, now, window)),
            Err(ErrorCode::Forbidden)
        );
        let old = message("ann", now - chrono::Duration::minutes(16));
        assert_eq!(
            code(may_edit("ann", &old, now, window)),
            Err(ErrorCode::Forbidden)
        );
        assert_eq!(may_edit("ann", &old, now, None), Ok(()), "no window");
        let gone = Message {
            deleted: true,
            ..fresh
        };
        assert_eq!(
            code(may_edit("ann", &gone, now, window)),
            Err(ErrorCode::NotFound)
        );
    }

    #[test]
    fn the_author_or_a_moderator_deletes() {
        let m = message("ann", crate::store::now());
        assert_eq!(may_delete("ann", &m, false), Ok(()));
        assert_eq!(may_delete("bob", &m, true), Ok(()));
        assert_eq!(
            may_delete("bob", &m, false).map_err(|e| e.code),
            Err(ErrorCode::Forbidden)
        );
    }
}
