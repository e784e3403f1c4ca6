//! `message:send` and `history:fetch`.

use socketioxide::adapter::Adapter;

use super::{Call, Chat, Conn, Reply, payload, presence::in_room, room_key, rooms};
use crate::{
    error::ChatResult,
    store::{Appended, HistoryPage, Message, NewMessage},
};

/// `message:send { room, text, clientId? }` → `{ message }`, and `message` to the rest of the room.
pub async fn send<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::MessageSend = payload::parse(
        "message:send",
        "{ room: \"general\", text: \"hello\", clientId: \"…\" }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let text = payload::text(&p.text, call.conn.ns.max_message_length)?;
    let client_id = payload::client_id(p.client_id)?;
    if !in_room(&call.socket, room) {
        return Err(rooms::not_in_room(room));
    }
    let new = NewMessage {
        room: room.to_owned(),
        from: call.conn.user.author(),
        text: text.to_owned(),
        client_id,
    };
    let appended = append(&call.chat, &call.conn, new).await?;
    if !appended.duplicate {
        broadcast(&call, &appended.message).await;
    }
    Ok(Reply::Sent {
        message: appended.message,
    })
}

/// Stores a message, or only numbers it in a namespace that keeps no history.
pub async fn append<A: Adapter>(
    chat: &Chat<A>,
    conn: &Conn,
    new: NewMessage,
) -> ChatResult<Appended> {
    let ns = conn.ns.path.as_str();
    if conn.ns.history {
        return Ok(chat.store.append_message(ns, new).await?);
    }
    let seq = chat.store.next_seq(ns, &new.room).await?;
    Ok(Appended {
        message: Message {
            id: uuid::Uuid::new_v4().to_string(),
            room: new.room,
            seq,
            from: new.from,
            text: new.text,
            client_id: new.client_id,
            at: crate::store::now(),
        },
        duplicate: false,
    })
}

/// Sends a committed message to every socket in its room but the sender's.
pub async fn broadcast<A: Adapter>(call: &Call<A>, message: &Message) {
    let key = room_key(&message.room);
    crate::cluster::deliver(
        call.chat.redis.as_ref(),
        || call.socket.to(key.clone()),
        "message",
        message,
    )
    .await;
}

/// `history:fetch { room, before?, after?, limit? }` → `{ messages, hasMore }`
pub async fn history<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::HistoryFetch = payload::parse(
        "history:fetch",
        "{ room: \"general\", before: 120, limit: 50 }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let query = payload::history_query(&p)?;
    rooms::authorize_member(&call.chat, &call.socket, &call.conn, room).await?;
    let page = if call.conn.ns.history {
        call.chat.store.history(call.ns(), room, query).await?
    } else {
        HistoryPage::default()
    };
    Ok(Reply::History(page))
}
