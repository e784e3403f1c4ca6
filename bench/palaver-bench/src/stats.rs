//! Counters, latency histograms and the delivery accounting (missing and duplicate deliveries).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Nanoseconds since the Unix epoch (the clock the send timestamps in message texts use).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------------------
// Message stamps

/// What a sent text carries: `<run>:<sender>:<n>:<unix_nanos>:<padding>`.
///
/// `run` tells this run's messages from those of another run (or another tool) in the same rooms, `sender` and
/// `n` identify the message (so receivers can find duplicates and the end tally missing ones), and the timestamp
/// gives the delivery latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp<'a> {
    pub run: &'a str,
    pub sender: u32,
    pub n: u32,
    pub sent_ns: u64,
}

/// Writes the text of message `n` of `sender`, padded with `x` to `size` bytes (longer when the header alone
/// is longer than `size`).
pub fn stamp_text(out: &mut String, run: &str, sender: u32, n: u32, sent_ns: u64, size: usize) {
    use std::fmt::Write;
    out.clear();
    // Writing to a String cannot fail.
    let _ = write!(out, "{run}:{sender}:{n}:{sent_ns}:");
    while out.len() < size {
        out.push('x');
    }
}

/// Parses a text written by [`stamp_text`]; `None` for any other text.
pub fn parse_stamp(text: &str) -> Option<Stamp<'_>> {
    let mut parts = text.splitn(5, ':');
    let run = parts.next()?;
    let sender = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    let sent_ns = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(Stamp {
        run,
        sender,
        n,
        sent_ns,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Bit sets of message numbers

/// A growable set of small integers (message numbers of one sender), one bit each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Bits {
    words: Vec<u64>,
}

impl Bits {
    /// Adds `n`; returns false when it was already there.
    pub fn insert(&mut self, n: u32) -> bool {
        let (w, b) = ((n / 64) as usize, n % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let mask = 1u64 << b;
        let fresh = self.words[w] & mask == 0;
        self.words[w] |= mask;
        fresh
    }

    #[cfg(test)]
    pub fn contains(&self, n: u32) -> bool {
        let (w, b) = ((n / 64) as usize, n % 64);
        self.words
            .get(w)
            .is_some_and(|word| word & (1u64 << b) != 0)
    }

    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// How many members of `self` are not in `other` (|self \ other|).
    pub fn count_not_in(&self, other: &Bits) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let o = other.words.get(i).copied().unwrap_or(0);
                u64::from((w & !o).count_ones())
            })
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The end tally

/// What one client ended the run with, as far as the delivery accounting goes.
#[derive(Debug, Default)]
pub struct Member {
    pub id: u32,
    /// The room index (`bench-<room>`).
    pub room: u32,
    /// The join was acked ok: the client is a member that every message of the room should reach.
    pub joined: bool,
    /// The connection was lost before the end (it then cannot be expected to have received everything).
    pub dropped: bool,
    /// The numbers of this client's messages that the server acked ok.
    pub acked: Bits,
    /// Per sender id, the message numbers received from it.
    pub received: HashMap<u32, Bits>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Deliveries that should have happened: for each message acked ok, every other member of its room that
    /// joined and stayed connected.
    pub expected: u64,
    /// Expected deliveries that did not happen.
    pub missing: u64,
    /// Deliveries of messages whose send was not acked ok (failed or timed out, yet broadcast).
    pub unacked: u64,
    /// Deliveries of this run's messages from a sender outside the receiver's room.
    pub misrouted: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.expected += o.expected;
        self.missing += o.missing;
        self.unacked += o.unacked;
        self.misrouted += o.misrouted;
    }
}

/// The tally over all clients. Cost: for each sender that had a message acked, one look-up per member of its
/// room, plus one pass over what each client received.
pub fn tally(members: &[Member]) -> Tally {
    let mut by_room: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut index: HashMap<u32, usize> = HashMap::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        by_room.entry(m.room).or_default().push(i);
        index.insert(m.id, i);
    }
    let mut t = Tally::default();
    for idxs in by_room.values() {
        for &s in idxs {
            let sender = &members[s];
            let acked = sender.acked.len();
            if acked == 0 {
                continue;
            }
            for &r in idxs {
                let recv = &members[r];
                if r == s || !recv.joined || recv.dropped {
                    continue;
                }
                t.expected += acked;
                t.missing += match recv.received.get(&sender.id) {
                    Some(got) => sender.acked.count_not_in(got),
                    None => acked,
                };
            }
        }
    }
    for recv in members {
        for (sender_id, got) in &recv.received {
            match index.get(sender_id).map(|&i| &members[i]) {
                Some(sender) if sender.room == recv.room => {
                    t.unacked += got.count_not_in(&sender.acked);
                }
                _ => t.misrouted += got.len(),
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------------------------
// Histograms

const SHARDS: usize = 16;

/// A latency histogram in microseconds (1 µs to 1 h, 3 significant digits), split in shards so that many tasks
/// on several threads can record without contending on one lock.
pub struct Hist {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Hist {
    pub fn new() -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(
                    Histogram::new_with_bounds(1, 3_600_000_000, 3)
                        .expect("constant, valid bounds"),
                )
            })
            .collect();
        Hist { shards }
    }

    pub fn record(&self, key: u32, micros: u64) {
        let shard = &self.shards[key as usize % SHARDS];
        if let Ok(mut h) = shard.lock() {
            h.saturating_record(micros.max(1));
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all =
            Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant, valid bounds");
        for s in &self.shards {
            if let Ok(h) = s.lock() {
                let _ = all.add(&*h);
            }
        }
        all
    }
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

/// Percentiles of a histogram in milliseconds.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Counters

/// Counts by a short string key (error codes, error kinds).
#[derive(Default)]
pub struct Counts(Mutex<BTreeMap<String, u64>>);

impl Counts {
    pub fn add(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(key.to_owned()).or_default() += 1;
        }
    }
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
    pub fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// Shared by all client tasks.
#[derive(Default)]
pub struct Stats {
    /// Clients that finished connecting and joining, one way or the other.
    pub settled: AtomicU64,
    pub connected: AtomicU64,
    pub joined: AtomicU64,
    pub connect_errors: Counts,
    pub join_errors: Counts,
    /// Nanoseconds after the connect phase started, of the last connect and of the last join.
    pub last_connected_ns: AtomicU64,
    pub last_joined_ns: AtomicU64,
    /// Connections lost before the end of the run, by reason.
    pub disconnects: Counts,

    pub sent: AtomicU64,
    pub acked_ok: AtomicU64,
    /// Sends that were not acked ok, by error code; `timeout` when no ack came within the ack timeout.
    pub send_errors: Counts,
    /// Acks that came after their timeout had been counted.
    pub late_acks: AtomicU64,
    pub send_failures: AtomicU64,

    /// `message` events received that carry this run's stamp.
    pub delivered: AtomicU64,
    /// Of those, received inside the measurement window.
    pub delivered_in_window: AtomicU64,
    pub duplicates: AtomicU64,
    /// `message` events from another run or tool (other stamp) or whose text is not a stamp.
    pub foreign: AtomicU64,
    /// Frames the codec could not decode.
    pub protocol_errors: Counts,

    /// With --read-every: `room:read` sent, acked ok, refused by code; `read` events (receipts) received.
    pub reads_sent: AtomicU64,
    pub reads_ok: AtomicU64,
    pub read_errors: Counts,
    pub receipts: AtomicU64,

    pub connect_latency: Hist,
    pub ack_latency: Hist,
    pub delivery_latency: Hist,
}

impl Stats {
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
    pub fn inc(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad() {
        let mut s = String::new();
        stamp_text(&mut s, "r1a", 42, 7, 1_700_000_000_123_456_789, 64);
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("r1a:42:7:1700000000123456789:xxx"));
        let st = parse_stamp(&s).unwrap();
        assert_eq!(
            st,
            Stamp {
                run: "r1a",
                sender: 42,
                n: 7,
                sent_ns: 1_700_000_000_123_456_789
            }
        );
        // A size below the header keeps the header whole.
        stamp_text(&mut s, "r", 1, 2, 3, 4);
        assert_eq!(s, "r:1:2:3:");
        assert_eq!(parse_stamp(&s).unwrap().n, 2);
    }

    #[test]
    fn foreign_texts_are_not_stamps() {
        for t in [
            "",
            "hello",
            "r:1:2:3",
            "r:x:2:3:",
            "r:1:-2:3:",
            "r:1:2:3.5:",
            "::::",
        ] {
            assert_eq!(parse_stamp(t), None, "{t}");
        }
    }

    #[test]
    fn bits_insert_contains_len() {
        let mut b = Bits::default();
        assert!(b.is_empty());
        assert!(b.insert(0));
        assert!(b.insert(63));
        assert!(b.insert(64));
        assert!(b.insert(1000));
        assert!(!b.insert(64), "second insert is a duplicate");
        assert!(b.contains(1000) && b.contains(0) && !b.contains(999) && !b.contains(5000));
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn bits_difference() {
        let mut a = Bits::default();
        let mut b = Bits::default();
        for n in 0..200 {
            a.insert(n);
        }
        for n in (0..200).step_by(2) {
            b.insert(n);
        }
        b.insert(500);
        assert_eq!(a.count_not_in(&b), 100);
        assert_eq!(b.count_not_in(&a), 1);
        assert_eq!(a.count_not_in(&Bits::default()), 200);
        assert_eq!(Bits::default().count_not_in(&a), 0);
    }

    fn member(id: u32, room: u32) -> Member {
        Member {
            id,
            room,
            joined: true,
            ..Member::default()
        }
    }

    fn bits(ns: impl IntoIterator<Item = u32>) -> Bits {
        let mut b = Bits::default();
        for n in ns {
            b.insert(n);
        }
        b
    }

    #[test]
    fn tally_all_delivered() {
        // Room 0: clients 0, 1, 2; each sends 0..10, everyone gets everything of the others.
        let mut ms: Vec<Member> = (0..3).map(|i| member(i, 0)).collect();
        for m in &mut ms {
            m.acked = bits(0..10);
        }
        for r in 0..3u32 {
            for s in 0..3u32 {
                if r != s {
                    ms[r as usize].received.insert(s, bits(0..10));
                }
            }
        }
        let t = tally(&ms);
        assert_eq!(
            t,
            Tally {
                expected: 60,
                missing: 0,
                unacked: 0,
                misrouted: 0
            }
        );
    }

    #[test]
    fn tally_missing_unacked_misrouted() {
        let mut ms = vec![member(0, 0), member(1, 0), member(2, 0), member(3, 1)];
        // Sender 0 had 0..10 acked; 10 and 11 were sent but the acks failed, and 11 was broadcast anyway.
        ms[0].acked = bits(0..10);
        // Client 1 got 0..8 and 11: two missing, one unacked.
        ms[1].received.insert(0, bits((0..8).chain([11])));
        // Client 2 got nothing from 0: ten missing.
        // Client 3 is in room 1 but got message 0 of sender 0: misrouted.
        ms[3].received.insert(0, bits([0]));
        let t = tally(&ms);
        assert_eq!(t.expected, 20);
        assert_eq!(t.missing, 12);
        assert_eq!(t.unacked, 1);
        assert_eq!(t.misrouted, 1);
    }

    #[test]
    fn tally_skips_receivers_that_did_not_join_or_dropped() {
        let mut ms = vec![member(0, 0), member(1, 0), member(2, 0), member(3, 0)];
        ms[0].acked = bits(0..5);
        ms[1].received.insert(0, bits(0..5));
        ms[2].joined = false;
        ms[3].dropped = true;
        let t = tally(&ms);
        assert_eq!(t.expected, 5);
        assert_eq!(t.missing, 0);
        // A sender whose own join failed still counts as a sender: what it got acked is expected.
        ms[0].joined = false;
        assert_eq!(tally(&ms).expected, 5);
    }

    #[test]
    fn percentiles_in_ms() {
        let h = Hist::new();
        for us in 1..=1000u64 {
            h.record(us as u32, us * 1000);
        }
        let p = Percentiles::of(&h.merged());
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() < 2.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Percentiles::of(&Hist::new().merged()).count, 0);
    }
}
