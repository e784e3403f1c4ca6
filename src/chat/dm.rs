//! `dm:send`: 1:1 conversations, each a room of kind `dm` shared by exactly two users.

use socketioxide::adapter::Adapter;

use std::sync::Arc;

use socketioxide::extract::SocketRef;

use super::{Call, Chat, Conn, Reply, messages, payload, presence, room_key, user_key};
use crate::cluster;
use crate::{
    error::{ChatError, ChatResult},
    store::{Author, NewMessage, Room, RoomKind, Visibility},
};

/// `dm:send { to, text, clientId? }` → `{ message }`, and `message` to every other socket of both users.
pub async fn send<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::DmSend = payload::parse(
        "dm:send",
        "{ to: \"user-id\", text: \"hello\", clientId: \"…\" }",
        call.payload.take(),
    )?;
    payload::user_id(&p.to, "to")?;
    let text = payload::text(&p.text, call.conn.ns.max_message_length)?;
    let client_id = payload::client_id(p.client_id)?;
    let (chat, conn) = (&call.chat, &call.conn);
    if p.to == conn.user.id {
        return Err(ChatError::bad_request("you cannot send a DM to yourself"));
    }
    let ns = call.ns();
    let peer_sockets = local_sockets(chat, ns, &p.to);
    // A guest's id dies with its connection: a DM to one that is gone could never be read.
    if crate::auth::is_guest_id(&p.to)
        && peer_sockets.is_empty()
        && !online_elsewhere(chat, ns, &p.to).await
    {
        return Err(ChatError::not_found(format!(
            "user {:?} is not online",
            p.to
        )));
    }
    let room_id = payload::dm_room_id(&conn.user.id, &p.to);
    if !presence::in_room(&call.socket, &room_id) {
        // First DM of this conversation on this connection: make sure the room and both memberships exist,
        // and bring every online socket of both users into it, on every node.
        let peer_name = peer_sockets
            .iter()
            .find_map(|s| s.extensions.get::<Arc<Conn>>())
            .map_or_else(|| p.to.clone(), |c| c.user.name.clone());
        let room = Room {
            id: room_id.clone(),
            name: room_id.clone(),
            kind: RoomKind::Dm,
            visibility: Visibility::Private,
            created_at: crate::store::now(),
        };
        let peer = Author {
            id: p.to.clone(),
            name: peer_name,
        };
        let me = conn.user.author();
        if !chat.store.create_dm(ns, &room, [&me, &peer]).await? {
            chat.store.add_member(ns, &room_id, &me).await?;
        }
        let key = room_key(&room_id);
        for socket in local_sockets(chat, ns, &conn.user.id)
            .iter()
            .chain(&peer_sockets)
        {
            socket.join(key.clone());
        }
        if let Some(op) = chat.io.of(ns) {
            let both = [user_key(&conn.user.id), user_key(&p.to)];
            cluster::on_every_node(chat.redis.as_ref(), "dm join", op.to(both).join(key)).await;
        }
    }
    let new = NewMessage {
        room: room_id,
        from: conn.user.author(),
        text: text.to_owned(),
        client_id,
        client_id_scope: crate::store::ClientIdScope::Sender,
    };
    let appended = messages::append(chat, &conn.ns, new).await?;
    if !appended.duplicate {
        messages::broadcast(chat, &call.socket, conn, &appended.message).await;
    }
    Ok(Reply::Sent {
        message: appended.message,
    })
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
