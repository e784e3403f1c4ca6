//! `room:read`: a member's read position, which only moves forward. The user's other sockets hear of it at once
//! (`read`), so badges clear on every device; the other members get the same event as a read receipt where
//! receipts are on (DMs always; group rooms when the namespace says so), at most one per user and room per
//! [`RECEIPT_PERIOD`] on a node, coalesced to the latest seq (see [`ReceiptThrottle`]).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde::Serialize;
use socketioxide::adapter::Adapter;

use super::{Call, Chat, Reply, SharedChat, payload, presence::in_room, room_key, rooms, user_key};
use crate::{
    auth::User,
    config::NamespaceSettings,
    error::{ChatError, ChatResult},
    store::ReadMark,
};

/// The shortest time between two read receipts of one user in one room, on one node.
pub const RECEIPT_PERIOD: Duration = Duration::from_secs(1);

/// Whether the other members of a room see its read receipts: always in a DM, in a group room when the
/// namespace turns them on (`read_receipts`, `--read-receipts`).
pub fn receipts_on(ns: &NamespaceSettings, room: &str) -> bool {
    room.starts_with(payload::DM_PREFIX) || ns.read_receipts
}

/// `read { room, user, seq }`.
#[derive(Clone, Serialize)]
struct ReadEvent<'a> {
    room: &'a str,
    user: &'a User,
    seq: i64,
}

/// `room:read { room, seq }` → `{}`: the user has read the room up to `seq`.
pub async fn read<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::RoomSeq = payload::parse(
        "room:read",
        "{ room: \"general\", seq: 41 }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    let seq = payload::seq(p.seq, "seq")?;
    if !in_room(&call.socket, room) {
        return Err(rooms::not_in_room(room));
    }
    let user = &call.conn.user;
    let now = crate::store::now();
    match call
        .chat
        .store
        .mark_read(call.ns(), room, &user.id, seq, now)
        .await?
    {
        ReadMark::Moved => {}
        ReadMark::Unchanged => return Ok(Reply::Done {}),
        ReadMark::NotMember => {
            return Err(ChatError::forbidden(format!(
                "you are not a member of room {room:?}, so you have no read state there (guests keep none in public rooms)"
            )));
        }
        ReadMark::NoSuchMessage => {
            return Err(ChatError::not_found(format!(
                "room {room:?} has no message {seq} yet"
            )));
        }
    }
    let event = ReadEvent { room, user, seq };
    let mine = user_key(&user.id);
    let socket = &call.socket;
    crate::cluster::deliver(
        call.chat.redis.as_ref(),
        || socket.to(mine.clone()),
        "read",
        &event,
    )
    .await;
    if receipts_on(&call.conn.ns, room) {
        offer_receipt(&call.chat, &call.conn.ns, room, user, seq).await;
    }
    Ok(Reply::Done {})
}

/// Sends the receipt to the room now, or leaves it to the flush the throttle has scheduled.
async fn offer_receipt<A: Adapter>(
    chat: &SharedChat<A>,
    ns: &std::sync::Arc<NamespaceSettings>,
    room: &str,
    user: &User,
    seq: i64,
) {
    let key = ReceiptKey {
        ns: ns.path.clone(),
        room: room.to_owned(),
        user: user.id.clone(),
    };
    match chat.receipts.offer(&key, seq, Instant::now()) {
        Offer::Now => send_receipt(chat, ns, room, user, seq).await,
        Offer::Queued => {}
        Offer::After(wait) => {
            let (chat, ns, user) = (chat.clone(), ns.clone(), user.clone());
            chat.tasks.clone().spawn(async move {
                tokio::time::sleep(wait).await;
                if let Some(seq) = chat.receipts.flush(&key, Instant::now()) {
                    send_receipt(&chat, &ns, &key.room, &user, seq).await;
                }
            });
        }
    }
}

/// `read` to every socket of the room but the reader's own (they had theirs at once), on every node.
async fn send_receipt<A: Adapter>(
    chat: &Chat<A>,
    ns: &NamespaceSettings,
    room: &str,
    user: &User,
    seq: i64,
) {
    let (key, theirs) = (room_key(room), user_key(&user.id));
    let target = || super::messages::server_target(chat, ns, &key).except(theirs.clone());
    let event = ReadEvent { room, user, seq };
    crate::cluster::deliver(chat.redis.as_ref(), target, "read", &event).await;
}

/// One user's receipts in one room.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReceiptKey {
    pub ns: String,
    pub room: String,
    pub user: String,
}

/// What to do with a receipt offered to the throttle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Send it now.
    Now,
    /// Too soon after the last one: it is held, and the caller schedules a [`ReceiptThrottle::flush`] after this.
    After(Duration),
    /// A flush is scheduled already; it will send this seq (or a later one).
    Queued,
}

/// A user's last receipt in a room and the one held back since.
#[derive(Debug)]
struct Slot {
    sent_at: Instant,
    /// The latest seq offered since `sent_at`, sent by the scheduled flush.
    held: Option<i64>,
}

/// Read receipts per user and room on this node: the first goes at once, later ones at most one per
/// [`RECEIPT_PERIOD`], each carrying the latest seq offered meanwhile; the latest is never dropped. A scrolling
/// client marking every message read costs the room one event a second.
#[derive(Default)]
pub struct ReceiptThrottle {
    slots: Mutex<HashMap<ReceiptKey, Slot>>,
}

impl ReceiptThrottle {
    pub fn offer(&self, key: &ReceiptKey, seq: i64, now: Instant) -> Offer {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = slots.get_mut(key) else {
            slots.insert(
                key.clone(),
                Slot {
                    sent_at: now,
                    held: None,
                },
            );
            return Offer::Now;
        };
        if let Some(held) = &mut slot.held {
            *held = (*held).max(seq);
            return Offer::Queued;
        }
        let since = now.saturating_duration_since(slot.sent_at);
        if since >= RECEIPT_PERIOD {
            slot.sent_at = now;
            return Offer::Now;
        }
        slot.held = Some(seq);
        Offer::After(RECEIPT_PERIOD - since)
    }

    /// The scheduled flush: the seq held back, to be sent now.
    pub fn flush(&self, key: &ReceiptKey, now: Instant) -> Option<i64> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.get_mut(key)?;
        let held = slot.held.take()?;
        slot.sent_at = now;
        Some(held)
    }

    /// Forgets the users whose last receipt is a period old and who have none held (housekeeping).
    pub fn prune(&self, now: Instant) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, slot| {
            slot.held.is_some() || now.saturating_duration_since(slot.sent_at) < RECEIPT_PERIOD
        });
        slots.shrink_to_fit();
    }

    /// Users and rooms tracked now.
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> ReceiptKey {
        ReceiptKey {
            ns: "/".into(),
            room: "r".into(),
            user: user.into(),
        }
    }

    #[test]
    fn one_receipt_a_period_carrying_the_latest_seq() {
        let throttle = ReceiptThrottle::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(throttle.offer(&key("ann"), 1, t0), Offer::Now);
        // Another user is not held back by ann.
        assert_eq!(throttle.offer(&key("bob"), 1, t0), Offer::Now);
        assert_eq!(
            throttle.offer(&key("ann"), 2, t0 + ms(200)),
            Offer::After(ms(800))
        );
        assert_eq!(throttle.offer(&key("ann"), 5, t0 + ms(300)), Offer::Queued);
        assert_eq!(throttle.offer(&key("ann"), 4, t0 + ms(400)), Offer::Queued);
        // The flush sends the latest seq offered, once.
        assert_eq!(throttle.flush(&key("ann"), t0 + ms(1000)), Some(5));
        assert_eq!(throttle.flush(&key("ann"), t0 + ms(1000)), None);
        // The next one waits a period from that flush.
        assert_eq!(
            throttle.offer(&key("ann"), 6, t0 + ms(1500)),
            Offer::After(ms(500))
        );
        assert_eq!(throttle.flush(&key("ann"), t0 + ms(2000)), Some(6));
        assert_eq!(throttle.offer(&key("ann"), 7, t0 + ms(3000)), Offer::Now);
    }

    #[test]
    fn prune_keeps_held_receipts() {
        let throttle = ReceiptThrottle::default();
        let t0 = Instant::now();
        throttle.offer(&key("ann"), 1, t0);
        throttle.offer(&key("bob"), 1, t0);
        throttle.offer(&key("bob"), 2, t0 + Duration::from_millis(10));
        throttle.prune(t0 + Duration::from_secs(5));
        assert_eq!(throttle.len(), 1, "bob's held receipt stays until flushed");
        assert_eq!(
            throttle.flush(&key("bob"), t0 + Duration::from_secs(5)),
            Some(2)
        );
        throttle.prune(t0 + Duration::from_secs(10));
        assert!(throttle.is_empty());
    }
}
