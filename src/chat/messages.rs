//! `message:send` and `history:fetch`.

use socketioxide::{adapter::Adapter, extract::SocketRef};

use super::{Call, Chat, Conn, Reply, payload, presence::in_room, room_key, rooms};
use crate::{
    error::ChatResult,
    store::{Appended, ClientIdScope, HistoryPage, Message, NewMessage},
};

/// `message:send { room, text, clientId? }` → `{ message }`, and `message` to the rest of the room.
pub async fn send<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::MessageSend = payload::parse(
        "message:send",
        "{ room: \"general\", text: \"hello\", clientId: \"…\" }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let post = Post {
        room,
        text: &p.text,
        client_id: p.client_id,
        scope: ClientIdScope::Sender,
    };
    let appended = post_message(&call.chat, &call.socket, &call.conn, post).await?;
    Ok(Reply::Sent {
        message: appended.message,
    })
}

/// A message a socket posts to a room it is in.
pub struct Post<'a> {
    pub room: &'a str,
    pub text: &'a str,
    pub client_id: Option<String>,
    pub scope: ClientIdScope,
}

/// The one send operation (native `message:send` and every profile's send rule): checks the text and client
/// id, commits the message, and delivers it to the room unless it is a retry of one already delivered.
pub async fn post_message<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    post: Post<'_>,
) -> ChatResult<Appended> {
    let text = payload::text(post.text, conn.ns.max_message_length)?;
    let client_id = payload::client_id(post.client_id)?;
    if !in_room(socket, post.room) {
        return Err(rooms::not_in_room(post.room));
    }
    let new = NewMessage {
        room: post.room.to_owned(),
        from: conn.user().author(),
        text: text.to_owned(),
        client_id,
        client_id_scope: post.scope,
    };
    let appended = append(chat, conn, new).await?;
    if !appended.duplicate {
        broadcast(chat, socket, conn, &appended.message).await;
    }
    Ok(appended)
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

/// Sends a committed message to the room: natively as `message` to every socket but the sender's, in a profile
/// namespace as the app's event.
pub async fn broadcast<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    message: &Message,
) {
    if let Some(profile) = &conn.ns.profile {
        crate::profile::events::deliver_message(profile, chat, socket, conn, message).await;
        return;
    }
    let key = room_key(&message.room);
    crate::cluster::deliver(
        chat.redis.as_ref(),
        || socket.to(key.clone()),
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
