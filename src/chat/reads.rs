//! `room:read`: a member's read position, which only moves forward. The user's other sockets hear of it at once
//! (`read`), so badges clear on every device; the other members get the same event as a read receipt where
//! receipts are on (DMs always; group rooms when the namespace says so), at most one per user and room per
//! [`RECEIPT_PERIOD`] on a node (longer in a room with many readers), coalesced to the latest seq (see
//! [`ReceiptThrottle`]).

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
    /// The period that applied when it was sent: the user's next receipt waits that long.
    period: Duration,
    /// The latest seq offered since `sent_at`, sent by the scheduled flush.
    held: Option<i64>,
}

/// Read receipts per user and room on this node: the first goes at once, later ones at most one per period, each
/// carrying the latest seq offered meanwhile; the latest is never dropped. A scrolling client marking every
/// message read costs the room one event a period.
///
/// The period is [`RECEIPT_PERIOD`] in a room where up to [`ROOM_RECEIPTS`] users send receipts, and grows with the
/// readers beyond that, so that a room hears about [`ROOM_RECEIPTS`] receipts a period from a node however many
/// read it: each receipt is a frame to every other member, so a room of `n` readers would otherwise cost `n²`
/// frames a period (~99,000 a second in a room of 100 where everyone reads; BENCHMARKS.md §10).
#[derive(Default)]
pub struct ReceiptThrottle {
    state: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    slots: HashMap<ReceiptKey, Slot>,
    /// Users with a slot, per (ns, room).
    readers: HashMap<(String, String), usize>,
}

/// The receipts a room hears a period from one node before each reader's period grows.
pub const ROOM_RECEIPTS: usize = 10;

/// A reader's period in a room with `readers` readers on the node.
pub fn receipt_period(readers: usize) -> Duration {
    let periods = readers.div_ceil(ROOM_RECEIPTS).max(1);
    RECEIPT_PERIOD * u32::try_from(periods).unwrap_or(u32::MAX)
}

impl ReceiptThrottle {
    pub fn offer(&self, key: &ReceiptKey, seq: i64, now: Instant) -> Offer {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Slots { slots, readers } = &mut *state;
        let room = (key.ns.clone(), key.room.clone());
        let Some(slot) = slots.get_mut(key) else {
            let count = readers.entry(room).or_default();
            *count += 1;
            slots.insert(
                key.clone(),
                Slot {
                    sent_at: now,
                    period: receipt_period(*count),
                    held: None,
                },
            );
            return Offer::Now;
        };
        if let Some(held) = &mut slot.held {
            *held = (*held).max(seq);
            return Offer::Queued;
        }
        let period = receipt_period(readers.get(&room).copied().unwrap_or(1));
        let since = now.saturating_duration_since(slot.sent_at);
        if since >= slot.period {
            slot.sent_at = now;
            slot.period = period;
            return Offer::Now;
        }
        slot.held = Some(seq);
        Offer::After(slot.period - since)
    }

    /// The scheduled flush: the seq held back, to be sent now.
    pub fn flush(&self, key: &ReceiptKey, now: Instant) -> Option<i64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Slots { slots, readers } = &mut *state;
        let room = (key.ns.clone(), key.room.clone());
        let period = receipt_period(readers.get(&room).copied().unwrap_or(1));
        let slot = slots.get_mut(key)?;
        let held = slot.held.take()?;
        slot.sent_at = now;
        slot.period = period;
        Some(held)
    }

    /// Forgets the users whose last receipt is a period old and who have none held (housekeeping).
    pub fn prune(&self, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Slots { slots, readers } = &mut *state;
        slots.retain(|key, slot| {
            let keep =
                slot.held.is_some() || now.saturating_duration_since(slot.sent_at) < slot.period;
            if !keep && let Some(count) = readers.get_mut(&(key.ns.clone(), key.room.clone())) {
                *count = count.saturating_sub(1);
            }
            keep
        });
        readers.retain(|_, count| *count > 0);
        slots.shrink_to_fit();
        readers.shrink_to_fit();
    }

    /// Users and rooms tracked now.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
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
    fn the_period_grows_with_the_readers_of_a_room() {
        assert_eq!(receipt_period(1), RECEIPT_PERIOD);
        assert_eq!(receipt_period(ROOM_RECEIPTS), RECEIPT_PERIOD);
        assert_eq!(receipt_period(ROOM_RECEIPTS + 1), RECEIPT_PERIOD * 2);
        assert_eq!(receipt_period(100), RECEIPT_PERIOD * 10);

        let throttle = ReceiptThrottle::default();
        let t0 = Instant::now();
        let users: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
        for user in &users {
            assert_eq!(throttle.offer(&key(user), 1, t0), Offer::Now);
        }
        // 30 readers: each may send one a 3 s; the first one's period was set when it was alone, the next is 3 s.
        let late = t0 + RECEIPT_PERIOD;
        assert_eq!(throttle.offer(&key("u0"), 2, late), Offer::Now);
        assert_eq!(
            throttle.offer(&key("u0"), 3, late + Duration::from_millis(500)),
            Offer::After(RECEIPT_PERIOD * 3 - Duration::from_millis(500))
        );
        assert_eq!(
            throttle.offer(&key("u29"), 2, late),
            Offer::After(RECEIPT_PERIOD * 2)
        );
        // Another room is not slowed by this one's readers.
        let other = ReceiptKey {
            room: "other".into(),
            ..key("u0")
        };
        assert_eq!(throttle.offer(&other, 1, late), Offer::Now);
        assert_eq!(throttle.offer(&other, 2, late + RECEIPT_PERIOD), Offer::Now);
        // Readers that went quiet are forgotten, and the period shrinks back.
        assert_eq!(
            throttle.flush(&key("u29"), late + RECEIPT_PERIOD * 2),
            Some(2)
        );
        assert_eq!(
            throttle.flush(&key("u0"), late + RECEIPT_PERIOD * 3),
            Some(3)
        );
        throttle.prune(late + RECEIPT_PERIOD * 10);
        assert!(throttle.is_empty());
        assert_eq!(
            throttle.offer(&key("u1"), 9, late + RECEIPT_PERIOD * 10),
            Offer::Now
        );
        assert_eq!(
            throttle.offer(&key("u1"), 10, late + RECEIPT_PERIOD * 11),
            Offer::Now
        );
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
