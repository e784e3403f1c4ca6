//! `room:role`, `room:kick`, `room:ban`, `room:unban`, `room:mute`, `room:unmute`, and who may moderate a room
//! ([`role_of`], [`may_moderate`], for the rules of other areas too).
//!
//! Ranks, highest first: a namespace admin (a claim of the user's token, `--admin-claim`), the room's owner (its
//! creator), its moderators, its members. Acting on a user takes a rank above theirs, and roles are given by the
//! owner or an admin; a room without an owner (made before owners were recorded, or by the host's backend) is
//! moderated by admins and the moderators they appoint. A DM has no moderators. Every action is stored with who
//! did it, and told to the room and to the user acted on (`room:moderation`; a kick or a ban of someone in the
//! room is also a departure, `room:notice`).
//!
//! A ban or mute lasts until its `until` or until lifted. Nothing runs when it ends: every check compares it with
//! the time. A ban is checked when the user joins; both are checked by the batch that commits the user's
//! messages, so a send pays no query of its own for them (see `store`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use socketioxide::adapter::Adapter;

use super::{Call, Chat, Conn, Reply, payload, room_key, rooms, user_key};
use crate::{
    auth::{self, User},
    error::{ChatError, ChatResult},
    store::{Actor, Author, RoomKind, RoomRole, Sanction, SanctionKind, SharedStore},
};

/// How far a user's say in a room goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Role(RoomRole),
    /// A namespace admin, whatever their role in the room.
    Admin,
}

/// `{ room, user }`: `room:kick`, `room:unban`, `room:unmute`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomUser {
    room: String,
    user: String,
}

/// `{ room, user, until? }`: `room:ban`, `room:mute`. Unknown fields are refused: a misspelt `until` must not
/// make a sanction last forever.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sanctioning {
    room: String,
    user: String,
    until: Option<String>,
}

/// `{ room, user, role }`: `room:role`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleChange {
    room: String,
    user: String,
    role: String,
}

/// The user's role in a room: `not_found` when there is no such room. A DM's users are members.
pub async fn role_of(
    store: &SharedStore,
    ns: &str,
    room: &str,
    user_id: &str,
) -> ChatResult<RoomRole> {
    store
        .room_role(ns, room, user_id)
        .await?
        .map(|(_, role)| role)
        .ok_or_else(|| ChatError::room_not_found(room))
}

/// Whether the socket's user may moderate the room (remove others' messages, and every event of this file): a
/// namespace admin, or the owner or a moderator of a group room. Nobody moderates a DM. `not_found` when there is
/// no such room.
pub async fn may_moderate<A: Adapter>(chat: &Chat<A>, conn: &Conn, room: &str) -> ChatResult<bool> {
    let found = chat
        .store
        .room_role(&conn.ns.path, room, &conn.user.id)
        .await?;
    match found {
        None => Err(ChatError::room_not_found(room)),
        Some((RoomKind::Dm, _)) => Ok(false),
        Some((RoomKind::Group, role)) => Ok(conn.admin() || role >= RoomRole::Moderator),
    }
}

/// Refuses a user banned from the room (`room:join`), saying until when.
pub async fn check_not_banned<A: Adapter>(
    chat: &Chat<A>,
    ns: &str,
    room: &str,
    user_id: &str,
) -> ChatResult<()> {
    let sanctions = chat.store.sanctions(ns, room, user_id).await?;
    match sanctions.iter().find(|s| s.kind == SanctionKind::Ban) {
        Some(ban) => Err(ChatError::forbidden(ban.reason(room))),
        None => Ok(()),
    }
}

/// `room:role { room, user, role }` → `{}`: the owner (or an admin) makes a member a moderator, or a moderator a
/// member again.
pub async fn set_role<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: RoleChange = payload::parse(
        "room:role",
        "{ room: \"general\", user: \"user-id\", role: \"moderator\" }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let target = target(&p.user, &call.conn, "change your own role")?;
    let role = match p.role.as_str() {
        "moderator" => RoomRole::Moderator,
        "member" => RoomRole::Member,
        "owner" => {
            return Err(ChatError::bad_request(
                "role \"owner\" cannot be given: the owner is the room's creator; use \"moderator\" or \"member\"",
            ));
        }
        other => {
            return Err(ChatError::bad_request(format!(
                "role {other:?} is not a role: use \"moderator\" or \"member\""
            )));
        }
    };
    let (chat, conn, ns) = (&call.chat, &call.conn, call.conn.ns.path.as_str());
    if standing(chat, conn, room).await? < Rank::Role(RoomRole::Owner) {
        return Err(ChatError::forbidden(format!(
            "only the owner of room {room:?} (or an admin) gives roles"
        )));
    }
    let current = role_of(&chat.store, ns, room, target).await?;
    if current == RoomRole::Owner {
        return Err(ChatError::forbidden(
            "the owner's role cannot change: the owner is the room's creator",
        ));
    }
    // A user is known to the room as a member, or as a moderator (who may have left).
    if current == RoomRole::Member && !chat.store.is_member(ns, room, target).await? {
        return Err(ChatError::not_found(format!(
            "user {target:?} is not a member of room {room:?}"
        )));
    }
    chat.store
        .set_role(ns, room, target, role, &actor(conn))
        .await?;
    let user = named(chat, ns, room, target).await.author();
    let told = Told {
        action: "role",
        user: &user,
        role: Some(role),
        until: None,
    };
    tell(&call, room, target, &told).await;
    Ok(Reply::Done {})
}

/// `room:kick { room, user }` → `{}`: the user is no longer a member, every socket of theirs leaves the room on
/// every node, and the room is told (`room:notice` of kind `kick`). They may join again, unlike after a ban.
pub async fn kick<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: RoomUser = payload::parse(
        "room:kick",
        "{ room: \"general\", user: \"user-id\" }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let target = target(&p.user, &call.conn, "kick yourself (leave with room:leave)")?;
    let (chat, conn, ns) = (&call.chat, &call.conn, call.conn.ns.path.as_str());
    authorize(chat, conn, room, target, "kick").await?;
    let online = online(chat, ns, room, target).await;
    if online.is_none() && !chat.store.is_member(ns, room, target).await? {
        return Err(ChatError::not_found(format!(
            "user {target:?} is not in room {room:?}"
        )));
    }
    chat.store
        .record_kick(ns, room, target, &actor(conn))
        .await?;
    let user = online.unwrap_or_else(|| offline_user(target));
    depart(&call, room, &user, "kick", None).await?;
    let user = user.author();
    let told = Told {
        action: "kick",
        user: &user,
        role: None,
        until: None,
    };
    tell(&call, room, target, &told).await;
    Ok(Reply::Done {})
}

/// `room:ban { room, user, until? }` → `{}`: the user cannot join the room until `until` (RFC 3339; absent: until
/// `room:unban`), nor post in it; if they are in it, they are removed as by a kick (`room:notice` of kind `ban`).
/// Any user id can be banned, also one who has left or never came.
pub async fn ban<A: Adapter>(call: Call<A>) -> ChatResult<Reply> {
    sanction(call, SanctionKind::Ban).await
}

/// `room:mute { room, user, until? }` → `{}`: the user's messages to the room are refused (`forbidden`, saying
/// until when) until `until` (RFC 3339; absent: until `room:unmute`). Any user id can be muted.
pub async fn mute<A: Adapter>(call: Call<A>) -> ChatResult<Reply> {
    sanction(call, SanctionKind::Mute).await
}

/// `room:unban { room, user }` → `{}`: lifts a ban in force (else `not_found`).
pub async fn unban<A: Adapter>(call: Call<A>) -> ChatResult<Reply> {
    lift(call, SanctionKind::Ban).await
}

/// `room:unmute { room, user }` → `{}`: lifts a mute in force (else `not_found`).
pub async fn unmute<A: Adapter>(call: Call<A>) -> ChatResult<Reply> {
    lift(call, SanctionKind::Mute).await
}

/// `room:ban` and `room:mute`.
async fn sanction<A: Adapter>(mut call: Call<A>, kind: SanctionKind) -> ChatResult<Reply> {
    let event = match kind {
        SanctionKind::Ban => "room:ban",
        SanctionKind::Mute => "room:mute",
    };
    let p: Sanctioning = payload::parse(
        event,
        "{ room: \"general\", user: \"user-id\", until: \"2030-01-01T00:00:00Z\" }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let target = target(&p.user, &call.conn, &format!("{} yourself", kind.as_str()))?;
    let until = until(p.until.as_deref())?;
    let (chat, conn, ns) = (&call.chat, &call.conn, call.conn.ns.path.as_str());
    authorize(chat, conn, room, target, kind.as_str()).await?;
    let online = online(chat, ns, room, target).await;
    chat.store
        .sanction(ns, room, target, Sanction { kind, until }, &actor(conn))
        .await?;
    let user = online.clone().unwrap_or_else(|| offline_user(target));
    if kind == SanctionKind::Ban
        && (online.is_some() || chat.store.is_member(ns, room, target).await?)
    {
        depart(&call, room, &user, "ban", Some(until)).await?;
    }
    let user = user.author();
    let told = Told {
        action: kind.as_str(),
        user: &user,
        role: None,
        until: Some(until),
    };
    tell(&call, room, target, &told).await;
    Ok(Reply::Done {})
}

/// `room:unban` and `room:unmute`.
async fn lift<A: Adapter>(mut call: Call<A>, kind: SanctionKind) -> ChatResult<Reply> {
    let (event, action) = match kind {
        SanctionKind::Ban => ("room:unban", "unban"),
        SanctionKind::Mute => ("room:unmute", "unmute"),
    };
    let p: RoomUser = payload::parse(
        event,
        "{ room: \"general\", user: \"user-id\" }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let target = target(&p.user, &call.conn, &format!("{action} yourself"))?;
    let (chat, conn, ns) = (&call.chat, &call.conn, call.conn.ns.path.as_str());
    authorize(chat, conn, room, target, action).await?;
    if !chat
        .store
        .lift_sanction(ns, room, target, kind, &actor(conn))
        .await?
    {
        let state = match kind {
            SanctionKind::Ban => "banned from",
            SanctionKind::Mute => "muted in",
        };
        return Err(ChatError::not_found(format!(
            "user {target:?} is not {state} room {room:?}"
        )));
    }
    let user = named(chat, ns, room, target).await.author();
    let told = Told {
        action,
        user: &user,
        role: None,
        until: None,
    };
    tell(&call, room, target, &told).await;
    Ok(Reply::Done {})
}

/// The user acted on: a valid user id that is not the actor's own.
fn target<'p>(user: &'p str, conn: &Conn, what: &str) -> ChatResult<&'p str> {
    payload::user_id(user, "user")?;
    if user == conn.user.id {
        return Err(ChatError::bad_request(format!("you cannot {what}")));
    }
    Ok(user)
}

/// `until`: an RFC 3339 time in the future, kept to the microsecond (as both stores keep times); absent or
/// `null`: until lifted.
pub fn until(until: Option<&str>) -> ChatResult<Option<DateTime<Utc>>> {
    use chrono::SubsecRound;
    let Some(text) = until else {
        return Ok(None);
    };
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|e| {
            ChatError::bad_request(format!(
                "until {text:?} is not an RFC 3339 time such as \"2030-01-01T00:00:00Z\": {e}"
            ))
        })?
        .with_timezone(&Utc)
        .trunc_subsecs(6);
    if at <= crate::store::now() {
        return Err(ChatError::bad_request(format!(
            "until {text:?} is not in the future; leave it out for a sanction until lifted"
        )));
    }
    Ok(Some(at))
}

/// The actor's rank in a group room: `not_found` without the room, `forbidden` for a DM.
async fn standing<A: Adapter>(chat: &Chat<A>, conn: &Conn, room: &str) -> ChatResult<Rank> {
    let found = chat
        .store
        .room_role(&conn.ns.path, room, &conn.user.id)
        .await?;
    match found {
        None => Err(ChatError::room_not_found(room)),
        Some((RoomKind::Dm, _)) => Err(ChatError::forbidden(
            "a direct conversation has no moderators",
        )),
        Some((RoomKind::Group, _)) if conn.admin() => Ok(Rank::Admin),
        Some((RoomKind::Group, role)) => Ok(Rank::Role(role)),
    }
}

/// May the socket's user do `what` to `target` in the room: a moderator or above, and above the target.
async fn authorize<A: Adapter>(
    chat: &Chat<A>,
    conn: &Conn,
    room: &str,
    target: &str,
    what: &str,
) -> ChatResult<()> {
    let rank = standing(chat, conn, room).await?;
    if rank < Rank::Role(RoomRole::Moderator) {
        return Err(ChatError::forbidden(format!(
            "only the moderators of room {room:?} can {what} its users"
        )));
    }
    let theirs = role_of(&chat.store, &conn.ns.path, room, target).await?;
    if rank <= Rank::Role(theirs) {
        return Err(ChatError::forbidden(format!(
            "you cannot {what} the room's {}: it takes a higher rank",
            theirs.as_str()
        )));
    }
    Ok(())
}

/// Who acts, as recorded.
fn actor(conn: &Conn) -> Actor {
    Actor {
        user: conn.user().author(),
        admin: conn.admin(),
    }
}

/// The user as the room sees them, if online in it (on any node).
async fn online<A: Adapter>(chat: &Chat<A>, ns: &str, room: &str, user_id: &str) -> Option<User> {
    chat.presence
        .users(ns, room)
        .await
        .into_iter()
        .find(|u| u.id == user_id)
}

/// A user who is not online in the room: their id stands for their name.
fn offline_user(user_id: &str) -> User {
    User {
        id: user_id.to_owned(),
        name: user_id.to_owned(),
        anonymous: auth::is_guest_id(user_id),
    }
}

/// The user as the room sees them, online or not.
async fn named<A: Adapter>(chat: &Chat<A>, ns: &str, room: &str, user_id: &str) -> User {
    online(chat, ns, room, user_id)
        .await
        .unwrap_or_else(|| offline_user(user_id))
}

/// A kick or a ban of a user in the room: the membership goes and every socket of theirs leaves the room on every
/// node (`rooms::remove_user`), then `room:notice` tells the room and the user's sockets.
async fn depart<A: Adapter>(
    call: &Call<A>,
    room: &str,
    user: &User,
    kind: &'static str,
    until: Option<Option<DateTime<Utc>>>,
) -> ChatResult<()> {
    let (chat, ns) = (&call.chat, call.conn.ns.path.as_str());
    let version = match rooms::remove_user(chat, ns, room, &user.id).await? {
        Some(version) => version,
        // Online only on another node and without a membership (a guest): its sockets were told to leave all
        // the same, and forgetting it again gives the notice its version.
        None => chat.presence.forget(ns, room, &user.id).await,
    };
    #[derive(Serialize)]
    struct Departure<'a> {
        room: &'a str,
        kind: &'static str,
        user: &'a User,
        by: Author,
        at: DateTime<Utc>,
        version: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<Option<DateTime<Utc>>>,
    }
    let notice = Departure {
        room,
        kind,
        user,
        by: call.conn.user().author(),
        at: crate::store::now(),
        version,
        until,
    };
    let keys = vec![room_key(room), user_key(&user.id)];
    crate::cluster::deliver(
        chat.redis.as_ref(),
        || call.socket.to(keys.clone()),
        "room:notice",
        &notice,
    )
    .await;
    Ok(())
}

/// What `room:moderation` says happened.
struct Told<'a> {
    action: &'static str,
    user: &'a Author,
    role: Option<RoomRole>,
    /// For a ban or mute: until when (`None`: until lifted).
    until: Option<Option<DateTime<Utc>>>,
}

/// `room:moderation { room, action, user, by, role?, until?, at }` to everyone in the room and every socket of
/// the user acted on, on every node (not to the acting socket, which has its ack).
async fn tell<A: Adapter>(call: &Call<A>, room: &str, target: &str, told: &Told<'_>) {
    #[derive(Serialize)]
    struct Event<'a> {
        room: &'a str,
        action: &'static str,
        user: &'a Author,
        by: Author,
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<RoomRole>,
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<Option<DateTime<Utc>>>,
        at: DateTime<Utc>,
    }
    let event = Event {
        room,
        action: told.action,
        user: told.user,
        by: call.conn.user().author(),
        role: told.role,
        until: told.until,
        at: crate::store::now(),
    };
    let keys = vec![room_key(room), user_key(target)];
    crate::cluster::deliver(
        call.chat.redis.as_ref(),
        || call.socket.to(keys.clone()),
        "room:moderation",
        &event,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn ranks_order_admins_over_owners_over_moderators_over_members() {
        let ranks = [
            Rank::Role(RoomRole::Member),
            Rank::Role(RoomRole::Moderator),
            Rank::Role(RoomRole::Owner),
            Rank::Admin,
        ];
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
    }

    #[test]
    fn until_is_a_future_rfc3339_time() {
        assert_eq!(until(None), Ok(None));
        let later = until(Some("2999-01-01T10:00:00.1234567+02:00"))
            .expect("valid")
            .expect("set");
        assert_eq!(
            later.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "2999-01-01T08:00:00.123456Z",
            "UTC, to the microsecond"
        );
        for bad in ["2000-01-01T00:00:00Z", "tomorrow", "", "2999-01-01"] {
            assert_eq!(
                until(Some(bad)).map_err(|e| e.code),
                Err(ErrorCode::BadRequest),
                "{bad}"
            );
        }
    }
}
