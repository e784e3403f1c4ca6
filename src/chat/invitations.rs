//! `room:invite`, `room:decline`, `invitations:list`, and the `invitation` event: nobody is put in a room by
//! someone else. An invited user sees the room (`rooms:list`, `session.invitations`) and enters it only by
//! accepting (`room:join`) — so other users cannot decide which rooms a user's sockets re-enter on connect.

use socketioxide::adapter::Adapter;

use super::{Call, Reply, payload, user_key};
use crate::{
    error::{ChatError, ChatResult},
    store::{Invitation, Room, RoomKind},
};

/// `room:invite { room, users }` → `{ invited }`: a member invites users to the room.
pub async fn invite<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::RoomInvite = payload::parse(
        "room:invite",
        "{ room: \"team-a\", users: [\"user-id\"] }",
        call.payload.take(),
    )?;
    let id = payload::room_id(&p.room)?;
    let users = payload::invitees(&p.users, "users", &call.conn.user.id)?;
    let (chat, ns) = (&call.chat, call.conn.ns.path.as_str());
    let room = chat
        .store
        .room(ns, id)
        .await?
        .ok_or_else(|| ChatError::room_not_found(id))?;
    if room.kind == RoomKind::Dm {
        return Err(ChatError::forbidden(
            "a direct conversation has exactly two users; nobody can be invited to it",
        ));
    }
    // A membership, not merely being in the room: a guest in a public room has none, and a new identity on
    // every connection would let it invite without limit.
    if !chat.store.is_member(ns, id, &call.conn.user.id).await? {
        return Err(ChatError::forbidden(format!(
            "only members of room {id:?} can invite to it; join it first (guests cannot invite)"
        )));
    }
    super::blocks::check_invitees(chat, ns, &call.conn.user.id, &users).await?;
    let invited = chat
        .store
        .invite(ns, id, &call.conn.user.author(), &users)
        .await?;
    notify(&call, &room, &invited).await;
    Ok(Reply::Invited { invited })
}

/// `room:decline { room }` → `{}`: the user turns an invitation down.
pub async fn decline<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::RoomOnly =
        payload::parse("room:decline", "{ room: \"team-a\" }", call.payload.take())?;
    let id = payload::room_id(&p.room)?;
    if !call
        .chat
        .store
        .decline(call.ns(), id, &call.conn.user.id)
        .await?
    {
        return Err(ChatError::not_found(format!(
            "you have no invitation to room {id:?}"
        )));
    }
    Ok(Reply::Done {})
}

/// `invitations:list {}` → `{ invitations }`: the user's open invitations, newest first.
pub async fn list<A: Adapter>(call: Call<A>) -> ChatResult<Reply> {
    if !call.payload.is_object() {
        return Err(ChatError::bad_request(
            "invitations:list takes one object as payload: {}",
        ));
    }
    let invitations = call
        .chat
        .store
        .invitations(call.ns(), &call.conn.user.id)
        .await?;
    Ok(Reply::Invitations { invitations })
}

/// Sends `invitation` to every socket of each invited user, on every node.
pub async fn notify<A: Adapter>(call: &Call<A>, room: &Room, invited: &[String]) {
    if invited.is_empty() {
        return;
    }
    let invitation = Invitation {
        room: room.clone(),
        by: call.conn.user.author(),
        at: crate::store::now(),
    };
    let keys: Vec<String> = invited.iter().map(|id| user_key(id)).collect();
    crate::cluster::deliver(
        call.chat.redis.as_ref(),
        || call.socket.to(keys.clone()),
        "invitation",
        &invitation,
    )
    .await;
}
