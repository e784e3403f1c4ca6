//! The report: one JSON object (`--json`, field names documented in bench/README.md) or a table.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::stats::Percentiles;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub config: Config,
    pub connect: Connect,
    /// Absent with `--rate 0`.
    pub messages: Option<Messages>,
    /// Present with `--read-every`.
    pub reads: Option<Reads>,
    /// Connections lost before the end, by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Present with `--server-pid`.
    pub server_memory: Option<ServerMemory>,
    /// Frames or payloads the tool could not decode, by error.
    pub protocol_errors: BTreeMap<String, u64>,
    pub elapsed_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Config {
    pub url: String,
    pub namespace: String,
    pub auth: &'static str,
    pub clients: u32,
    pub rooms: u32,
    pub rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// The longest drain allowed (`--drain`).
    pub drain_s: f64,
    /// How long the drain took: until nothing arrived for 1 s.
    pub drained_s: f64,
    pub size: usize,
    pub source_addrs: usize,
    pub fd_limit: u64,
    pub run: String,
}

#[derive(Debug, Serialize)]
pub struct Connect {
    pub attempted: u64,
    pub connected: u64,
    pub joined: u64,
    /// Failed connections by kind (`tcp: …`, `websocket: …`, `connect_error: …`, `timeout`).
    pub errors: BTreeMap<String, u64>,
    /// Failed joins by ack error code, `timeout`, or why the connection was lost.
    pub join_errors: BTreeMap<String, u64>,
    /// Seconds from the first connect attempt to the last successful connect.
    pub all_connected_s: f64,
    /// Seconds from the first connect attempt to the last successful join.
    pub all_joined_s: f64,
    /// `connected / all_connected_s`.
    pub connect_rate_per_s: f64,
    /// From the TCP connect to the Socket.IO connect ack, per client.
    pub latency: Percentiles,
}

#[derive(Debug, Serialize)]
pub struct Messages {
    /// The per-client interval that was used: `joined / rate` seconds.
    pub send_interval_ms: f64,
    pub sent: u64,
    /// Sent during the measurement window, per second.
    pub sent_per_s: f64,
    pub acked_ok: u64,
    /// Sends not acked ok, by the ack's error code; `timeout` (no ack within --ack-timeout),
    /// `connection lost`.
    pub send_errors: BTreeMap<String, u64>,
    /// Writes that failed (the connection was gone).
    pub send_failures: u64,
    /// Acks that arrived after their timeout was counted.
    pub late_acks: u64,
    /// `message:send` to ack, for sends in the measurement window.
    pub ack_latency: Percentiles,
    /// `message` events of this run received (all of them, duplicates included).
    pub delivered: u64,
    /// Received inside the measurement window, per second.
    pub delivered_per_s: f64,
    /// Send timestamp to receipt, for messages sent in the measurement window.
    pub delivery_latency: Percentiles,
    /// For each message acked ok: the other members of its room that joined and stayed connected.
    pub expected_deliveries: u64,
    pub missing_deliveries: u64,
    pub duplicate_deliveries: u64,
    /// Deliveries of messages whose send was not acked ok.
    pub unacked_deliveries: u64,
    /// Deliveries to a client outside the sender's room.
    pub misrouted_deliveries: u64,
    /// `message` events not from this run (another tool or run in the same rooms).
    pub foreign_messages: u64,
}

/// The read traffic (`--read-every`).
#[derive(Debug, Serialize)]
pub struct Reads {
    /// The shortest time between two `room:read` of one client.
    pub every_s: f64,
    pub sent: u64,
    /// Over the sending (warm-up and measurement).
    pub sent_per_s: f64,
    pub acked_ok: u64,
    /// Refusals by the ack's error code.
    pub errors: BTreeMap<String, u64>,
    /// `read` events (read receipts of other members) received, in all and per second of sending.
    pub receipts: u64,
    pub receipts_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct ServerMemory {
    pub pid: u32,
    pub rss_before_bytes: u64,
    /// Once every client had connected and joined.
    pub rss_joined_bytes: u64,
    /// At the end of the run (before disconnecting).
    pub rss_end_bytes: u64,
    /// `(rss_joined - rss_before) / connected`.
    pub per_connection_bytes: f64,
}

fn map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn lat(p: &Percentiles) -> String {
    if p.count == 0 {
        return "no samples".to_owned();
    }
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2} ms  ({} samples)",
        p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.count
    )
}

impl Report {
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "palaver-bench {} -> {} (namespace {}, {} auth, run {})",
            self.version, c.url, c.namespace, c.auth, c.run
        );
        let _ = writeln!(
            s,
            "  {} clients, {} rooms, rate {} msg/s, {} B texts, warm-up {} s, duration {} s, drained in {:.1} s (max {} s)",
            c.clients, c.rooms, c.rate, c.size, c.warmup_s, c.duration_s, c.drained_s, c.drain_s
        );
        let k = &self.connect;
        let _ = writeln!(s, "connect");
        let _ = writeln!(
            s,
            "  connected        {}/{}   joined {}",
            k.connected, k.attempted, k.joined
        );
        let _ = writeln!(s, "  connect errors   {}", map(&k.errors));
        let _ = writeln!(s, "  join errors      {}", map(&k.join_errors));
        let _ = writeln!(
            s,
            "  connect rate     {:.1} conn/s; all connected within {:.2} s, all joined within {:.2} s",
            k.connect_rate_per_s, k.all_connected_s, k.all_joined_s
        );
        let _ = writeln!(s, "  connect latency  {}", lat(&k.latency));
        if let Some(m) = &self.messages {
            let _ = writeln!(s, "messages");
            let _ = writeln!(
                s,
                "  sent             {} ({:.1}/s measured, every {:.1} ms per client); acked ok {}",
                m.sent, m.sent_per_s, m.send_interval_ms, m.acked_ok
            );
            let _ = writeln!(
                s,
                "  send errors      {}   (late acks {}, failed writes {})",
                map(&m.send_errors),
                m.late_acks,
                m.send_failures
            );
            let _ = writeln!(s, "  ack latency      {}", lat(&m.ack_latency));
            let _ = writeln!(
                s,
                "  delivered        {} ({:.1}/s measured)",
                m.delivered, m.delivered_per_s
            );
            let _ = writeln!(s, "  delivery latency {}", lat(&m.delivery_latency));
            let _ = writeln!(
                s,
                "  deliveries       expected {}, missing {}, duplicate {}, unacked {}, misrouted {}, foreign {}",
                m.expected_deliveries,
                m.missing_deliveries,
                m.duplicate_deliveries,
                m.unacked_deliveries,
                m.misrouted_deliveries,
                m.foreign_messages
            );
        }
        if let Some(r) = &self.reads {
            let _ = writeln!(
                s,
                "reads              {} room:read ({:.1}/s, at most every {} s per client), acked ok {}, errors {}; {} receipts received ({:.1}/s)",
                r.sent,
                r.sent_per_s,
                r.every_s,
                r.acked_ok,
                map(&r.errors),
                r.receipts,
                r.receipts_per_s
            );
        }
        let _ = writeln!(s, "disconnects        {}", map(&self.disconnects));
        if !self.protocol_errors.is_empty() {
            let _ = writeln!(s, "protocol errors    {}", map(&self.protocol_errors));
        }
        if let Some(mem) = &self.server_memory {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let _ = writeln!(
                s,
                "server memory      pid {}: {:.1} MiB before, {:.1} MiB joined, {:.1} MiB at the end; {:.0} B per connection",
                mem.pid,
                mib(mem.rss_before_bytes),
                mib(mem.rss_joined_bytes),
                mib(mem.rss_end_bytes),
                mem.per_connection_bytes
            );
        }
        let _ = writeln!(s, "elapsed            {:.1} s", self.elapsed_s);
        s
    }
}

/// Resident set size of a process, from /proc (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
