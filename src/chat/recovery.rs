//! Catching up after being away: `room:join { since }` and `sync { rooms }` return every message after the
//! seq the client holds, in order. Past the recovery limit the answer says `truncated`, never a silent gap.

use std::collections::BTreeMap;

use serde::Serialize;
use socketioxide::adapter::Adapter;

use super::{Call, Chat, Conn, Reply, payload, rooms};
use crate::{
    error::{ChatError, ChatResult},
    store::{HistoryPage, HistoryQuery, Message},
};

/// One room's catch-up in a `sync` reply.
#[derive(Serialize)]
#[serde(untagged)]
pub enum CatchUp {
    Messages {
        messages: Vec<Message>,
        truncated: bool,
    },
    Refused {
        error: ChatError,
    },
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

/// `sync { rooms: { [room]: seq } }` → `{ rooms: { [room]: { messages, truncated } | { error } } }`
pub async fn sync<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::Sync = payload::parse(
        "sync",
        "{ rooms: { general: 41, \"dm:…\": 7 } }",
        call.payload.take(),
    )?;
    let max = call.chat.limits.max_rooms_per_socket;
    if p.rooms.len() > max {
        return Err(ChatError::too_large(format!(
            "sync at most {max} rooms at once"
        )));
    }
    let mut caught_up = BTreeMap::new();
    for (room, since) in p.rooms {
        let outcome = catch_up(&call, &room, since).await;
        let entry = match outcome {
            Ok(page) => CatchUp::Messages {
                messages: page.messages,
                truncated: page.has_more,
            },
            // A store outage fails the whole sync: the client retries it as a whole.
            Err(error) if error.code == crate::error::ErrorCode::Unavailable => return Err(error),
            Err(error) => CatchUp::Refused { error },
        };
        caught_up.insert(room, entry);
    }
    Ok(Reply::Synced { rooms: caught_up })
}

async fn catch_up<A: Adapter>(call: &Call<A>, room: &str, since: i64) -> ChatResult<HistoryPage> {
    let room = payload::room_id(room)?;
    let since = payload::since(since)?;
    rooms::authorize_member(&call.chat, &call.socket, &call.conn, room).await?;
    missed(&call.chat, &call.conn, room, since).await
}
