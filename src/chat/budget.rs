//! What one socket, and one user across all their sockets, may make the server do: a token bucket per event
//! class for each socket and for each user, and a cap on the events a socket may have waiting.
//!
//! Both are checked when an event arrives, before anything is spawned or parsed further, so a refused event costs
//! one ack and holds no memory: a client flooding events without reading its acks cannot grow the server.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ChatError;

/// The kinds of work a client can ask for, each with its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventClass {
    /// `room:create`, `room:join`, `room:leave`, `room:invite`, `room:decline`: memberships and rooms; and the
    /// moderation events (`room:role`, `room:kick`, `room:ban`, …), `user:block`, `user:unblock`.
    Join,
    /// `rooms:list`, `history:fetch`, `sync`, `invitations:list`, `messages:search`: database reads.
    Read,
    /// `presence:list`.
    Presence,
    /// `typing`.
    Typing,
    /// `message:send`, `dm:send`.
    Send,
}

impl EventClass {
    const ALL: [EventClass; 5] = [
        EventClass::Join,
        EventClass::Read,
        EventClass::Presence,
        EventClass::Typing,
        EventClass::Send,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn refusal(self) -> &'static str {
        match self {
            EventClass::Join => "too many joins, leaves and room changes",
            EventClass::Read => "too many reads (lists, history, sync)",
            EventClass::Presence => "too many presence requests",
            EventClass::Typing => "too many typing events",
            EventClass::Send => "too many messages",
        }
    }
}

/// A bucket: `rate` per second, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }

    fn times(self, factor: NonZeroU32) -> Rate {
        Rate {
            per_second: self.per_second.saturating_mul(factor),
            burst: self.burst.saturating_mul(factor),
        }
    }
}

/// The configured budgets: one [`Rate`] per class for each socket; a user's budget is `user_factor` times it,
/// shared by all their sockets on a node, so fifty tabs do not get fifty times the budget.
#[derive(Clone, Debug)]
pub struct BudgetConfig {
    pub join: Rate,
    pub read: Rate,
    pub presence: Rate,
    pub typing: Rate,
    pub send: Rate,
    pub user_factor: NonZeroU32,
    /// Events one socket may have received but not yet finished; past it, events are refused unrun.
    pub max_queued: usize,
}

impl BudgetConfig {
    fn rate(&self, class: EventClass) -> Rate {
        match class {
            EventClass::Join => self.join,
            EventClass::Read => self.read,
            EventClass::Presence => self.presence,
            EventClass::Typing => self.typing,
            EventClass::Send => self.send,
        }
    }
}

/// One socket's buckets and its count of waiting events.
pub struct SocketBudget {
    buckets: Vec<DefaultDirectRateLimiter>,
    queued: AtomicUsize,
    max_queued: usize,
}

impl SocketBudget {
    pub fn new(config: &BudgetConfig) -> Self {
        Self {
            buckets: EventClass::ALL
                .iter()
                .map(|class| RateLimiter::direct(config.rate(*class).quota()))
                .collect(),
            queued: AtomicUsize::new(0),
            max_queued: config.max_queued,
        }
    }

    /// Takes a place in the socket's queue, or refuses when it is full. The place is given back when the
    /// returned guard drops, whether the event succeeded or not.
    pub fn enqueue(self: &Arc<Self>) -> Result<QueuePlace, ChatError> {
        let taken = self.queued.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ChatError::rate_limited(format!(
                "{taken} events from this connection are still waiting; wait for their acks before sending more"
            )));
        }
        Ok(QueuePlace {
            budget: self.clone(),
        })
    }

    fn spend(&self, class: EventClass) -> Result<(), ChatError> {
        match self.buckets.get(class.index()) {
            Some(bucket) if bucket.check().is_err() => Err(ChatError::rate_limited(format!(
                "{} from this connection; slow down and retry",
                class.refusal()
            ))),
            _ => Ok(()),
        }
    }
}

/// A taken place in a socket's queue of waiting events.
pub struct QueuePlace {
    budget: Arc<SocketBudget>,
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.budget.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every user's buckets on this node, keyed by user id.
pub struct UserBudgets {
    buckets: Vec<DefaultKeyedRateLimiter<String>>,
}

/// How often idle users' buckets are dropped.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

impl UserBudgets {
    pub fn new(config: &BudgetConfig) -> Self {
        Self {
            buckets: EventClass::ALL
                .iter()
                .map(|class| {
                    RateLimiter::keyed(config.rate(*class).times(config.user_factor).quota())
                })
                .collect(),
        }
    }

    fn spend(&self, user_id: &str, class: EventClass) -> Result<(), ChatError> {
        match self.buckets.get(class.index()) {
            Some(bucket) if bucket.check_key(&user_id.to_owned()).is_err() => {
                Err(ChatError::rate_limited(format!(
                    "{} from this user across their connections; slow down and retry",
                    class.refusal()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Forgets users whose buckets are full again: a full bucket is the same as no bucket.
    pub fn prune(&self) {
        for bucket in &self.buckets {
            bucket.retain_recent();
            bucket.shrink_to_fit();
        }
    }
}

/// Spends one event of `class` from the socket's budget, then from the user's.
pub fn spend(
    socket: &SocketBudget,
    users: &UserBudgets,
    user_id: &str,
    class: EventClass,
) -> Result<(), ChatError> {
    socket.spend(class)?;
    users.spend(user_id, class)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).expect("rate"),
            burst: NonZeroU32::new(burst).expect("burst"),
        }
    }

    fn config() -> BudgetConfig {
        BudgetConfig {
            join: rate(1, 3),
            read: rate(1, 2),
            presence: rate(1, 1),
            typing: rate(1, 1),
            send: rate(1, 4),
            user_factor: NonZeroU32::new(2).expect("factor"),
            max_queued: 2,
        }
    }

    #[test]
    fn each_class_has_its_own_bucket() {
        let config = config();
        let (socket, users) = (SocketBudget::new(&config), UserBudgets::new(&config));
        for _ in 0..3 {
            spend(&socket, &users, "ada", EventClass::Join).expect("within the burst");
        }
        let refused = spend(&socket, &users, "ada", EventClass::Join).expect_err("burst spent");
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert!(refused.message.contains("joins"), "{}", refused.message);
        spend(&socket, &users, "ada", EventClass::Read).expect("reads are separate");
    }

    #[test]
    fn many_sockets_share_one_user_budget() {
        let config = config();
        let users = UserBudgets::new(&config);
        let tabs: Vec<SocketBudget> = (0..10).map(|_| SocketBudget::new(&config)).collect();
        // The user's burst is factor × socket burst = 6 joins, however many tabs.
        let granted = tabs
            .iter()
            .flat_map(|tab| (0..3).map(move |_| tab))
            .filter(|tab| spend(tab, &users, "ada", EventClass::Join).is_ok())
            .count();
        assert_eq!(granted, 6);
        spend(&tabs[0], &users, "bob", EventClass::Read).expect("other users are separate");
    }

    #[test]
    fn queue_places_are_given_back() {
        let socket = Arc::new(SocketBudget::new(&config()));
        let first = socket.enqueue().expect("first");
        let second = socket.enqueue().expect("second");
        let refused = socket.enqueue().err().expect("full");
        assert_eq!(refused.code, ErrorCode::RateLimited);
        drop(first);
        let third = socket.enqueue().expect("a place was freed");
        drop((second, third));
        assert_eq!(socket.queued.load(Ordering::Acquire), 0);
    }
}
