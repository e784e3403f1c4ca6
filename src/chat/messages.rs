//! `message:send` (replies included) and `history:fetch`.

use socketioxide::{adapter::Adapter, extract::SocketRef};

use super::{Call, Chat, Conn, Reply, payload, presence::in_room, room_key, rooms};
use crate::{
    config::NamespaceSettings,
    error::{ChatError, ChatResult},
    store::{Appended, Author, ClientIdScope, HistoryPage, Message, NewMessage, ReplyTo},
};

/// `message:send { room, text, clientId?, replyTo? }` → `{ message }`, and `message` to the rest of the room.
pub async fn send<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::MessageSend = payload::parse(
        "message:send",
        "{ room: \"general\", text: \"hello\", clientId: \"…\", replyTo: 41 }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let post = Post {
        room,
        text: &p.text,
        client_id: p.client_id,
        scope: ClientIdScope::Sender,
        reply_to: p
            .reply_to
            .map(|seq| payload::seq(seq, "replyTo"))
            .transpose()?,
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
    /// The seq of the message of the room this one answers.
    pub reply_to: Option<i64>,
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
    if post.room.starts_with(payload::DM_PREFIX) {
        super::blocks::check_dm_room(chat, &conn.ns.path, post.room, &conn.user.id).await?;
    }
    // Only a reply costs a read before the send.
    let reply_to = match post.reply_to {
        Some(seq) => Some(replied_to(chat, &conn.ns, post.room, seq).await?),
        None => None,
    };
    let new = NewMessage {
        room: post.room.to_owned(),
        from: conn.user().author(),
        text: text.to_owned(),
        client_id,
        client_id_scope: post.scope,
        reply_to,
    };
    // In a namespace that replays history on connect, the commit and the broadcast pass the room's gate.
    let _gate = match conn.ns.profile.as_ref().map(|p| &p.history) {
        Some(crate::profile::History::OnConnect { .. }) => {
            Some(chat.replay_gates.send(&conn.ns.path, post.room).await)
        }
        _ => None,
    };
    let appended = append(chat, &conn.ns, new).await?;
    if !appended.duplicate {
        broadcast(chat, socket, conn, &appended.message).await;
    }
    Ok(appended)
}

/// The message of `room` a reply answers, as the reply quotes it: `not_found` if the room has no such message
/// (a namespace that keeps no history has none) or it is deleted.
async fn replied_to<A: Adapter>(
    chat: &Chat<A>,
    ns: &NamespaceSettings,
    room: &str,
    seq: i64,
) -> ChatResult<ReplyTo> {
    match chat.store.message(&ns.path, room, seq).await? {
        Some(message) if !message.deleted => Ok(ReplyTo::quoting(&message)),
        Some(_) => Err(ChatError::not_found(format!(
            "message {seq} of room {room:?} was deleted; it cannot be replied to"
        ))),
        None => Err(ChatError::not_found(format!(
            "room {room:?} has no message {seq} to reply to"
        ))),
    }
}

/// The send operation of the server API: the host's backend posts to a room as any sender (a user, a bot, the
/// system). Checked, committed and numbered like a socket's message, and delivered to everyone in the room on
/// every node, unless it is a retry of one already delivered.
pub async fn publish<A: Adapter>(
    chat: &Chat<A>,
    ns: &NamespaceSettings,
    room: &str,
    from: Author,
    text: &str,
    client_id: Option<String>,
) -> ChatResult<Appended> {
    let text = payload::text(text, ns.max_message_length)?;
    let client_id = payload::client_id(client_id)?;
    let found = chat
        .store
        .room(&ns.path, room)
        .await?
        .ok_or_else(|| ChatError::room_not_found(room))?;
    let new = NewMessage {
        room: found.id.clone(),
        from,
        text: text.to_owned(),
        client_id,
        client_id_scope: ClientIdScope::Sender,
        reply_to: None,
    };
    let _gate = match ns.profile.as_ref().map(|p| &p.history) {
        Some(crate::profile::History::OnConnect { .. }) => {
            Some(chat.replay_gates.send(&ns.path, &found.id).await)
        }
        _ => None,
    };
    let appended = append(chat, ns, new).await?;
    if !appended.duplicate {
        broadcast_from_server(chat, ns, &appended.message, &found.name).await;
    }
    Ok(appended)
}

/// Sends a committed message the server API posted to everyone in its room, on every node: natively as
/// `message`, in a profile namespace as the app's event (`written`: the room as the app names it).
pub async fn broadcast_from_server<A: Adapter>(
    chat: &Chat<A>,
    ns: &NamespaceSettings,
    message: &Message,
    written: &str,
) {
    chat.metrics.delivered();
    if let Some(profile) = &ns.profile {
        crate::profile::events::deliver_from_server(profile, chat, ns, message, written).await;
        return;
    }
    let key = room_key(&message.room);
    let target = || server_target(chat, ns, &key);
    crate::cluster::deliver(chat.redis.as_ref(), target, "message", message).await;
}

/// Every socket of the namespace in `key` (a room's or a user's), on every node.
pub fn server_target<A: Adapter>(
    chat: &Chat<A>,
    ns: &NamespaceSettings,
    key: &str,
) -> socketioxide::operators::BroadcastOperators<A> {
    match chat.io.of(&ns.path) {
        Some(operators) => operators.within(key.to_owned()),
        // Every namespace in `chat.namespaces` is registered at start-up, so this is not reached.
        None => chat.io.within(key.to_owned()),
    }
}

/// Stores a message, or only numbers it in a namespace that keeps no history.
pub async fn append<A: Adapter>(
    chat: &Chat<A>,
    ns: &NamespaceSettings,
    new: NewMessage,
) -> ChatResult<Appended> {
    if ns.history {
        let appended = chat.store.append_message(&ns.path, new).await?;
        if !appended.duplicate {
            chat.metrics.message_stored();
        }
        return Ok(appended);
    }
    let seq = chat
        .store
        .next_seq(&ns.path, &new.room, &new.from.id)
        .await?;
    Ok(Appended {
        message: Message {
            id: uuid::Uuid::new_v4().to_string(),
            room: new.room,
            seq,
            from: new.from,
            text: new.text,
            client_id: new.client_id,
            at: crate::store::now(),
            reply_to: new.reply_to,
            ..Default::default()
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
    chat.metrics.delivered();
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
        let viewer = &call.conn.user.id;
        call.chat
            .store
            .history_for(call.ns(), room, query, viewer)
            .await?
    } else {
        HistoryPage::default()
    };
    Ok(Reply::History(page))
}
