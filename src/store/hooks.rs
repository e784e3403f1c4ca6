//! The webhook outbox's rows and the per-room message cursors as the store reads and writes them (the tables:
//! `migrations/*/0005_webhook_outbox.sql`, `0006_webhook_cursors.sql`; delivery: [`crate::webhooks`]).

use std::collections::HashSet;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value as Json, json};
use tokio::sync::Notify;

use super::{Author, Message};

/// A webhook event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookEvent {
    MessageCreated,
    MemberAdded,
    MemberRemoved,
    MessageMissed,
}

impl HookEvent {
    pub const ALL: [HookEvent; 4] = [
        HookEvent::MessageCreated,
        HookEvent::MemberAdded,
        HookEvent::MemberRemoved,
        HookEvent::MessageMissed,
    ];

    /// The name the host sees as `type` (and `--webhook-events` takes).
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::MessageCreated => "message.created",
            HookEvent::MemberAdded => "room.member_added",
            HookEvent::MemberRemoved => "room.member_removed",
            HookEvent::MessageMissed => "message.missed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of event types: the ones the host asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookEvents(u8);

impl HookEvents {
    pub const NONE: HookEvents = HookEvents(0);

    pub fn with(self, event: HookEvent) -> Self {
        Self(self.0 | event.bit())
    }
    pub fn contains(self, event: HookEvent) -> bool {
        self.0 & event.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub(super) fn bits(self) -> u8 {
        self.0
    }
    pub(super) fn from_bits(bits: u8) -> Self {
        Self(bits)
    }
}

/// An outbox row to write: the event's `data` as JSON text.
#[derive(Clone, Debug)]
pub struct NewHook {
    pub ns: String,
    pub room: String,
    pub event: HookEvent,
    pub data: String,
}

impl NewHook {
    /// `message.created { ns, message }`.
    pub fn message_created(ns: &str, message: &Message) -> Self {
        Self::new(
            ns,
            &message.room,
            HookEvent::MessageCreated,
            json!({ "ns": ns, "message": message }),
        )
    }

    /// `message.missed { ns, message, user: { id } }`: `user` had no connected socket when it was sent.
    pub fn message_missed(ns: &str, message: &Message, user_id: &str) -> Self {
        Self::new(
            ns,
            &message.room,
            HookEvent::MessageMissed,
            json!({ "ns": ns, "message": message, "user": { "id": user_id } }),
        )
    }

    /// `room.member_added` / `room.member_removed` `{ ns, room, user: { id, name } }`.
    pub fn member(event: HookEvent, ns: &str, room: &str, user: &Author) -> Self {
        Self::new(
            ns,
            room,
            event,
            json!({ "ns": ns, "room": room, "user": { "id": user.id, "name": user.name } }),
        )
    }

    fn new(ns: &str, room: &str, event: HookEvent, data: Json) -> Self {
        Self {
            ns: ns.to_owned(),
            room: room.to_owned(),
            event,
            data: data.to_string(),
        }
    }
}

/// A row claimed for delivery.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ClaimedHook {
    pub id: i64,
    pub event: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The `Palaver-Webhook-Id` of a dead-lettered `message.created` put back by a retry; else the row's id.
    pub webhook_id: Option<String>,
}

impl ClaimedHook {
    /// The id the host sees (`Palaver-Webhook-Id` and the body's `id`).
    pub fn webhook_id(&self) -> String {
        self.webhook_id
            .clone()
            .unwrap_or_else(|| self.id.to_string())
    }
}

/// A dead letter, as `GET /api/v1/webhooks/failed` lists it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedHook {
    /// The `Palaver-Webhook-Id` its attempts carried (and its retry carries), for
    /// `POST /api/v1/webhooks/failed/{id}/retry`.
    pub id: String,
    #[serde(rename = "type")]
    pub event: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The event's `data`, as it would have been sent.
    pub data: Json,
}

/// A failed row as both backends store it.
#[derive(sqlx::FromRow)]
pub(super) struct FailedRow {
    pub id: i64,
    pub webhook_id: Option<String>,
    pub event: String,
    pub payload: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<FailedRow> for FailedHook {
    fn from(row: FailedRow) -> Self {
        Self {
            id: row.webhook_id.unwrap_or_else(|| row.id.to_string()),
            event: row.event,
            data: serde_json::from_str(&row.payload).unwrap_or(Json::String(row.payload)),
            attempts: row.attempts,
            last_error: row.last_error,
            created_at: row.created_at,
        }
    }
}

/// A room whose `message.created` events a node has claimed: its messages after `delivered_seq`, in order.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ClaimedCursor {
    pub ns: String,
    pub room: String,
    pub delivered_seq: i64,
    /// Failed attempts at the message right after `delivered_seq`.
    pub attempts: i64,
}

/// What a node did with a claimed room's messages; recorded with [`crate::store::Store::record_cursor`], which also
/// gives up the lease.
#[derive(Clone, Debug)]
pub struct CursorOutcome {
    /// Every message up to here was delivered (or dead-lettered).
    pub delivered_seq: i64,
    pub failure: Option<CursorFailure>,
}

/// The message right after [`CursorOutcome::delivered_seq`] failed.
#[derive(Clone, Debug)]
pub enum CursorFailure {
    /// To be tried again at `next_attempt_at`, its `attempts`-th failure.
    Retry {
        error: String,
        attempts: i64,
        next_attempt_at: DateTime<Utc>,
    },
    /// Out of attempts: written to the outbox as a dead letter (keeping the webhook id its attempts carried) and
    /// passed over.
    Dead {
        hook: NewHook,
        webhook_id: String,
        error: String,
        attempts: i64,
        seq: i64,
        /// When the message was sent: the dead letter's `createdAt`, as its attempts carried it.
        created_at: DateTime<Utc>,
    },
}

/// The batch writer's wake-up call to this node's webhook delivery: the rooms it just committed messages to.
/// Delivery claims those rooms at once instead of waiting for its next sweep of every room.
#[derive(Debug, Default)]
pub struct HookWake {
    rooms: Mutex<HashSet<(String, String)>>,
    notify: Notify,
}

impl HookWake {
    /// Notes that `rooms` have new messages, and wakes delivery.
    pub fn rooms<'r>(&self, rooms: impl Iterator<Item = (&'r str, &'r str)>) {
        if let Ok(mut set) = self.rooms.lock() {
            set.extend(rooms.map(|(ns, room)| (ns.to_owned(), room.to_owned())));
        }
        self.notify.notify_one();
    }

    /// Wakes delivery for the outbox (a member event or `message.missed` was written).
    pub fn outbox(&self) {
        self.notify.notify_one();
    }

    /// The rooms noted since the last call.
    pub fn take_rooms(&self) -> Vec<(String, String)> {
        self.rooms
            .lock()
            .map(|mut set| set.drain().collect())
            .unwrap_or_default()
    }

    /// Resolves at the next wake-up (or at once if one came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}
