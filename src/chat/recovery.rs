//! Catching up after being away: `room:join { since }` and `sync { rooms }` return every message after the
//! seq the client holds, in order. Past the recovery limit the answer says `truncated`, never a silent gap.
//!
//! The same catch-up brings what changed in the messages the client already holds: given the room revision it
//! holds (`{ seq, rev }`), each message at or below `seq` that was edited, deleted or reacted to since comes in its
//! current state (`changes`), with the room's revision to hold next. `sync` also brings the user's read state
//! (`lastRead`, `unread`) and, where read receipts are on, where the other members have read up to.

use std::collections::BTreeMap;

use serde::Serialize;
use socketioxide::adapter::Adapter;

use super::{Call, Chat, Conn, Reply, payload, reads, rooms};
use crate::{
    error::{ChatError, ChatResult},
    store::{HistoryPage, HistoryQuery, Message, ReadPosition},
};

/// Most other members' read positions one room's catch-up returns (the most recent first).
pub const MAX_READ_POSITIONS: i64 = 100;

/// One room's catch-up in a `sync` reply.
#[derive(Serialize)]
#[serde(untagged)]
pub enum CatchUp {
    Room(Box<RoomCatchUp>),
    Refused { error: ChatError },
}

/// What a client missed in one room.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomCatchUp {
    /// Every message after the seq held, oldest first, up to the recovery limit.
    pub messages: Vec<Message>,
    pub truncated: bool,
    /// The revision to hold next (see [`Changes`](crate::store::Changes)).
    pub rev: i64,
    /// With a revision held: the messages at or below the seq held changed since, oldest change first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<Message>>,
    /// More changes than one catch-up returns: `rev` is the last one returned; catch up again from there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub changes_truncated: bool,
    pub last_read: i64,
    pub unread: i64,
    /// Where receipts are on: where the other members have read up to, the most recent first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads: Option<Vec<ReadPosition>>,
}

/// Messages after `since`, oldest first, up to the recovery limit; `has_more` means truncated.
pub async fn missed<A: Adapter>(
    chat: &Chat<A>,
    conn: &Conn,
    room: &str,
    since: i64,
) -> ChatResult<HistoryPage> {
    if !conn.ns.history {
        return Ok(HistoryPage::default());
    }
    let query = HistoryQuery {
        before: None,
        after: Some(since),
        limit: chat.limits.recovery_limit.max(1),
    };
    Ok(chat
        .store
        .history_for(&conn.ns.path, room, query, &conn.user.id)
        .await?)
}

/// The messages at or below `up_to_seq` changed after revision `after`, if the room has changed since, up to the
/// recovery limit, and the revision to hold next: `current` (the room's revision, read before anything else of
/// the catch-up), or the last change returned when truncated.
pub async fn changed<A: Adapter>(
    chat: &Chat<A>,
    conn: &Conn,
    room: &str,
    up_to_seq: i64,
    after: i64,
    current: i64,
) -> ChatResult<(HistoryPage, i64)> {
    if !conn.ns.history || after >= current {
        return Ok((HistoryPage::default(), current));
    }
    let limit = chat.limits.recovery_limit.max(1);
    let page = chat
        .store
        .changed_messages(&conn.ns.path, room, up_to_seq, after, limit, &conn.user.id)
        .await?;
    let next = match page.messages.last() {
        Some(last) if page.has_more => last.rev.unwrap_or(after),
        _ => current,
    };
    Ok((page, next))
}

/// `sync { rooms: { [room]: seq | { seq, rev } } }` →
/// `{ rooms: { [room]: { messages, truncated, rev, changes?, lastRead, unread, reads? } | { error } } }`
pub async fn sync<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::Sync = payload::parse(
        "sync",
        "{ rooms: { general: { seq: 41, rev: 7 }, \"dm:…\": 7 } }",
        call.payload.take(),
    )?;
    let max = call.chat.limits.max_rooms_per_socket;
    if p.rooms.len() > max {
        return Err(ChatError::too_large(format!(
            "sync at most {max} rooms at once"
        )));
    }
    let mut caught_up = BTreeMap::new();
    for (room, cursor) in p.rooms {
        let (since, rev) = cursor.parts();
        let outcome = catch_up(&call, &room, since, rev).await;
        let entry = match outcome {
            Ok(room) => CatchUp::Room(Box::new(room)),
            // A store outage fails the whole sync: the client retries it as a whole.
            Err(error) if error.code == crate::error::ErrorCode::Unavailable => return Err(error),
            Err(error) => CatchUp::Refused { error },
        };
        caught_up.insert(room, entry);
    }
    Ok(Reply::Synced { rooms: caught_up })
}

async fn catch_up<A: Adapter>(
    call: &Call<A>,
    room: &str,
    since: i64,
    rev: Option<i64>,
) -> ChatResult<RoomCatchUp> {
    let room = payload::room_id(room)?;
    let since = payload::since(since)?;
    let rev = rev.map(payload::rev).transpose()?;
    let (chat, conn) = (&call.chat, &call.conn);
    rooms::authorize_member(chat, &call.socket, conn, room).await?;
    let ns = conn.ns.path.as_str();
    // The revision first: a change committed after this read comes again next time, none is missed.
    let state = chat
        .store
        .room_state(ns, room, &conn.user.id)
        .await?
        .ok_or_else(|| ChatError::room_not_found(room))?;
    let page = missed(chat, conn, room, since).await?;
    let (changes, next) = match rev {
        Some(after) => {
            let (changes, next) = changed(chat, conn, room, since, after, state.rev).await?;
            (Some(changes), next)
        }
        None => (None, state.rev),
    };
    let reads = if reads::receipts_on(&conn.ns, room) {
        let positions = chat
            .store
            .read_positions(ns, room, &conn.user.id, MAX_READ_POSITIONS)
            .await?;
        Some(positions)
    } else {
        None
    };
    Ok(RoomCatchUp {
        messages: page.messages,
        truncated: page.has_more,
        rev: next,
        changes_truncated: changes.as_ref().is_some_and(|c| c.has_more),
        changes: changes.map(|c| c.messages),
        last_read: state.last_read,
        unread: state.unread,
        reads,
    })
}
