//! palaver: a Socket.IO-compatible chat server. A stock `socket.io-client` v4 connects unchanged; rooms, DMs,
//! join/leave notices and history are kept durably.
//!
//! Where things are:
//! * [`config`]: flags and environment, the namespaces file;
//! * [`server`]: [`serve`] wires everything on a bound listener and shuts down gracefully;
//! * [`auth`]: who a connection is (JWT or guest);
//! * [`chat`]: the event contract, one file per area (`rooms`, `invitations`, `messages`, `dm`, `presence`,
//!   `recovery`, `session`, `moderation`, `blocks`, `search`), and the budgets every event spends (`budget`);
//! * [`profile`]: compatibility profiles: an existing Socket.IO app's events mapped onto palaver's operations;
//! * [`presence`]: who is online in which room, one facade over this node's registry and Redis, notice versions;
//! * [`cluster`]: several nodes through Redis: the link, its health and heartbeat, delivery with local fallback;
//! * [`store`]: rooms, memberships, invitations, messages, roles, bans and mutes, blocks and search behind one trait,
//!   one SQL implementation for SQLite and Postgres;
//! * [`admin_ui`]: the official Socket.IO Admin UI's `/admin` namespace (an operator's dashboard, not the chat's
//!   namespace admins): sign-in, the sockets and rooms it is shown, its commands;
//! * [`http`]: `/healthz`, `/readyz`, the history API and the demo page;
//! * [`metrics`]: the Prometheus series of `/metrics`, one recorder per server;
//! * [`webhooks`]: events for the host's backend, delivered from the message log and the store's outbox, signed, in order per
//!   room, retried and dead-lettered;
//! * [`retention`]: the job that turns each namespace's old messages into tombstones, on one node at a time;
//! * [`cli`]: the command line: serving, and the `migrate`, `check-config` and `user erase` subcommands;
//! * [`error`]: the `{ code, message }` error every client sees;
//! * [`telemetry`]: log lines as text or JSON, spans exported over OTLP.

pub mod admin_ui;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod presence;
pub mod profile;
pub mod retention;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod webhooks;

pub use config::Config;
pub use server::{Error, serve};
