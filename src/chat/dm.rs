//! `dm:send`: 1:1 conversations, each a room of kind `dm` shared by exactly two users.

use socketioxide::adapter::Adapter;

use std::sync::Arc;

use socketioxide::extract::SocketRef;

use super::{Call, Chat, Conn, Reply, messages, payload, presence, room_key, user_key};
use crate::cluster;
use crate::{
    config::NamespaceSettings,
    error::{ChatError, ChatResult},
    store::{
        Appended, Author, HookEvent, Message, NewHook, NewMessage, Room, RoomKind, Visibility,
    },
};

/// `dm:send { to, text, clientId? }` → `{ message }`, and `message` to every other socket of both users.
pub async fn send<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::DmSend = payload::parse(
        "dm:send",
        "{ to: \"user-id\", text: \"hello\", clientId: \"…\" }",
        call.payload.take(),
    )?;
    let dm = Dm {
        from: call.conn.user.author(),
        to: &p.to,
        text: &p.text,
        client_id: p.client_id,
    };
    let appended = send_dm(
        &call.chat,
        &call.conn.ns,
        dm,
        Some((&call.socket, &call.conn)),
    )
    .await?;
    Ok(Reply::Sent {
        message: appended.message,
    })
}

/// A direct message from one user (or bot) to another.
pub struct Dm<'a> {
    pub from: Author,
    pub to: &'a str,
    pub text: &'a str,
    pub client_id: Option<String>,
}

/// The one DM operation (native `dm:send` and the server API): checks the message and that neither user blocked
/// the other (before anything is created), makes sure the conversation's room and both memberships exist and that every online socket of both users is in it on every node, commits
/// the message and delivers it to the room, unless it is a retry of one already delivered. A socket that sent it
/// (`sender`) does not get it back; from the server API, every socket of both users does.
pub async fn send_dm<A: Adapter>(
    chat: &Chat<A>,
    ns_settings: &NamespaceSettings,
    dm: Dm<'_>,
    sender: Option<(&SocketRef<A>, &Conn)>,
) -> ChatResult<Appended> {
    let Dm {
        from,
        to,
        text,
        client_id,
    } = dm;
    payload::user_id(to, "to")?;
    let text = payload::text(text, ns_settings.max_message_length)?;
    let client_id = payload::client_id(client_id)?;
    if to == from.id {
        return Err(ChatError::bad_request("you cannot send a DM to yourself"));
    }
    let ns = ns_settings.path.as_str();
    super::blocks::check_dm(chat, ns, &from.id, to).await?;
    let peer_sockets = local_sockets(chat, ns, to);
    // A guest's id dies with its connection: a DM to one that is gone could never be read.
    if crate::auth::is_guest_id(to)
        && peer_sockets.is_empty()
        && !online_elsewhere(chat, ns, to).await
    {
        return Err(ChatError::not_found(format!("user {to:?} is not online")));
    }
    let room_id = payload::dm_room_id(&from.id, to);
    // A socket already in the conversation has been through this before, on this connection.
    if !sender.is_some_and(|(socket, _)| presence::in_room(socket, &room_id)) {
        let peer_name = peer_sockets
            .iter()
            .find_map(|s| s.extensions.get::<Arc<Conn>>())
            .map_or_else(|| to.to_owned(), |c| c.user.name.clone());
        let room = Room {
            id: room_id.clone(),
            name: room_id.clone(),
            kind: RoomKind::Dm,
            visibility: Visibility::Private,
            created_at: crate::store::now(),
        };
        let peer = Author {
            id: to.to_owned(),
            name: peer_name,
        };
        if !chat.store.create_dm(ns, &room, [&from, &peer]).await? {
            chat.store.add_member(ns, &room_id, &from).await?;
        }
        let key = room_key(&room_id);
        for socket in local_sockets(chat, ns, &from.id)
            .iter()
            .chain(&peer_sockets)
        {
            socket.join(key.clone());
        }
        if let Some(op) = chat.io.of(ns) {
            let both = [user_key(&from.id), user_key(to)];
            cluster::on_every_node(chat.redis.as_ref(), "dm join", op.to(both).join(key)).await;
        }
    }
    let new = NewMessage {
        room: room_id,
        from,
        text: text.to_owned(),
        client_id,
        client_id_scope: crate::store::ClientIdScope::Sender,
        reply_to: None,
    };
    let appended = messages::append(chat, ns_settings, new).await?;
    if !appended.duplicate && chat.store.hook_events().contains(HookEvent::MessageMissed) {
        record_missed(chat, ns, to, &appended.message);
    }
    if !appended.duplicate {
        let message = &appended.message;
        match sender {
            Some((socket, conn)) => messages::broadcast(chat, socket, conn, message).await,
            None => {
                messages::broadcast_from_server(chat, ns_settings, message, &message.room).await
            }
        }
    }
    Ok(appended)
}

/// `message.missed` for the recipient of a DM who has no connected socket on any node, right after the
/// message's commit: who is connected is known from the adapter, not the database, so this row cannot share the
/// message's transaction (a crash between the two loses it; `message.created` is not lost). Runs beside the
/// chat, so that asking the other nodes never delays the sender's ack; shutdown waits for it.
fn record_missed<A: Adapter>(chat: &Chat<A>, ns: &str, to: &str, message: &Message) {
    if !local_sockets(chat, ns, to).is_empty() {
        return;
    }
    let store = chat.store.clone();
    let hook = NewHook::message_missed(ns, message, to);
    let remote = match (chat.redis.clone(), chat.io.of(ns)) {
        (Some(link), Some(op)) => Some((link, op.within(user_key(to)))),
        _ => None,
    };
    chat.tasks.spawn(async move {
        if let Some((link, op)) = remote {
            // An unreachable cluster counts as "online somewhere": no false `missed` when unsure.
            if !link.is_up() {
                return;
            }
            let found =
                tokio::time::timeout(std::time::Duration::from_secs(2), op.fetch_sockets()).await;
            if !matches!(found, Ok(Ok(sockets)) if sockets.is_empty()) {
                return;
            }
        }
        if let Err(e) = store.enqueue_hooks(std::slice::from_ref(&hook)).await {
            tracing::warn!(error = %e, "webhooks: cannot record message.missed");
        }
    });
}

/// This node's sockets of a user.
fn local_sockets<A: Adapter>(chat: &Chat<A>, ns: &str, user_id: &str) -> Vec<SocketRef<A>> {
    chat.io
        .of(ns)
        .map(|op| op.within(user_key(user_id)).sockets())
        .unwrap_or_default()
}

/// Whether a user has a socket on another node (only asked when Redis is up).
async fn online_elsewhere<A: Adapter>(chat: &Chat<A>, ns: &str, user_id: &str) -> bool {
    let (Some(link), Some(op)) = (chat.redis.as_ref(), chat.io.of(ns)) else {
        return false;
    };
    if !link.is_up() {
        return false;
    }
    let found = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        op.within(user_key(user_id)).fetch_sockets(),
    )
    .await;
    matches!(found, Ok(Ok(sockets)) if !sockets.is_empty())
}
