//! The webhook outbox's rows as the store reads and writes them (the table: `migrations/*/0005_webhook_outbox.sql`;
//! delivery: [`crate::webhooks`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value as Json, json};

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
}

/// A dead letter, as `GET /api/v1/webhooks/failed` lists it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedHook {
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
    pub event: String,
    pub payload: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<FailedRow> for FailedHook {
    fn from(row: FailedRow) -> Self {
        Self {
            id: row.id.to_string(),
            event: row.event,
            data: serde_json::from_str(&row.payload).unwrap_or(Json::String(row.payload)),
            attempts: row.attempts,
            last_error: row.last_error,
            created_at: row.created_at,
        }
    }
}
