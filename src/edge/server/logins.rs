//! Password checks, shared fairly between the addresses logins come from: a few run at once,
//! and the rest wait in one small queue per source, served round-robin, so a flood from one
//! address waits behind itself and never in front of another address's login.
//!
//! Everything is bounded: the checks running (`running`), the logins one source may have
//! waiting (`per_source`), and the logins waiting in all (`waiting`). When every waiting place
//! is taken, a source with fewer waiting logins than the longest queue takes that queue's
//! newest place, so a few busy sources cannot keep the others out either.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::oneshot;

/// Why a login was not given a place to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Busy {
    /// This source already has its most logins waiting.
    SourceQueue,
    /// Every waiting place is taken by sources with as many logins waiting as this one.
    Queue,
    /// It waited longer than the queue allows, or lost its place to a source with fewer.
    Wait,
}

impl Busy {
    /// The label it is counted under.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Busy::SourceQueue => "source_queue",
            Busy::Queue => "queue_full",
            Busy::Wait => "queue_wait",
        }
    }
}

/// The source a login is queued and rate-limited under: an IPv4 address, or the /64 network of
/// an IPv6 address (one host holds a whole /64).
pub(super) fn source(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Sources a [`LoginRate`] tracks at most; beyond it, logins from new sources are refused until
/// idle ones are forgotten.
pub(super) const MAX_LOGIN_SOURCES: usize = 65_536;

/// The login rate of each source address, in a map of at most [`MAX_LOGIN_SOURCES`].
pub(super) struct LoginRate {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

/// Why a login was refused before its password was looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RateRefusal {
    /// Over the source's rate.
    Source,
    /// Too many sources tracked at once.
    Sources,
}

impl LoginRate {
    /// `per_minute` logins per source, `burst` at once.
    pub(super) fn new(per_minute: u32, burst: u32) -> LoginRate {
        let rate =
            std::num::NonZeroU32::new(per_minute.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(burst.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
        LoginRate {
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
        }
    }

    /// Counts a login from `source` against its rate.
    pub(super) fn check(&self, source: IpAddr) -> Result<(), RateRefusal> {
        if self.limiter.len() >= MAX_LOGIN_SOURCES {
            self.limiter.retain_recent();
            if self.limiter.len() >= MAX_LOGIN_SOURCES {
                return Err(RateRefusal::Sources);
            }
        }
        self.limiter
            .check_key(&source)
            .map_err(|_| RateRefusal::Source)
    }

    /// Forgets sources whose rate has recovered.
    pub(super) fn upkeep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The password-check slots and their per-source queues.
pub(super) struct LoginQueue {
    state: Mutex<State>,
    running: usize,
    per_source: usize,
    waiting: usize,
    wait: Duration,
}

/// A login waiting for a slot: told `true` when it is handed one, `false` when it is put out.
struct Waiter {
    id: u64,
    wake: oneshot::Sender<bool>,
}

#[derive(Default)]
struct State {
    /// Checks running now.
    running: usize,
    /// Logins waiting, in all.
    waiting: usize,
    /// Each source's waiting logins, oldest first.
    queues: HashMap<IpAddr, VecDeque<Waiter>>,
    /// The sources with logins waiting, in the order they are served next.
    turn: VecDeque<IpAddr>,
    next_id: u64,
}

/// A slot to check a password in, given back (to the next source in turn) on drop.
pub(super) struct LoginPermit {
    queue: Arc<LoginQueue>,
}

/// A login's place in its source's queue, taken out again if it stops waiting.
struct Place<'a> {
    queue: &'a Arc<LoginQueue>,
    source: IpAddr,
    id: u64,
    woken: oneshot::Receiver<bool>,
    granted: bool,
}

impl LoginQueue {
    /// `running` checks at once, `per_source` waiting per source and `waiting` in all, each
    /// waiting at most `wait`.
    pub(super) fn new(running: usize, per_source: usize, waiting: usize, wait: Duration) -> Self {
        LoginQueue {
            state: Mutex::default(),
            running: running.max(1),
            per_source: per_source.max(1),
            waiting: waiting.max(1),
            wait,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a login from `source`, at once or after its turn comes.
    pub(super) async fn enter(self: &Arc<Self>, source: IpAddr) -> Result<LoginPermit, Busy> {
        let place = {
            let mut state = self.lock();
            if state.running < self.running && state.waiting == 0 {
                state.running += 1;
                return Ok(LoginPermit {
                    queue: self.clone(),
                });
            }
            self.queue_up(&mut state, source)?
        };
        let mut place = place;
        match tokio::time::timeout(self.wait, &mut place.woken).await {
            Ok(Ok(true)) => {
                place.granted = true;
                Ok(LoginPermit {
                    queue: self.clone(),
                })
            }
            _ => Err(Busy::Wait),
        }
    }

    /// Puts a login from `source` at the end of its queue, making room when every place is
    /// taken by putting out the newest login of the longest queue, if that is longer.
    fn queue_up<'a>(
        self: &'a Arc<Self>,
        state: &mut State,
        source: IpAddr,
    ) -> Result<Place<'a>, Busy> {
        let mine = state.queues.get(&source).map_or(0, VecDeque::len);
        if mine >= self.per_source {
            return Err(Busy::SourceQueue);
        }
        if state.waiting >= self.waiting {
            let longest = state
                .queues
                .iter()
                .max_by_key(|(_, queue)| queue.len())
                .map(|(source, queue)| (*source, queue.len()));
            match longest {
                Some((other, len)) if len > mine + 1 => state.put_out(other),
                _ => return Err(Busy::Queue),
            }
        }
        let (wake, woken) = oneshot::channel();
        state.next_id += 1;
        let id = state.next_id;
        let queue = state.queues.entry(source).or_default();
        if queue.is_empty() {
            state.turn.push_back(source);
        }
        queue.push_back(Waiter { id, wake });
        state.waiting += 1;
        Ok(Place {
            queue: self,
            source,
            id,
            woken,
            granted: false,
        })
    }

    /// A slot given back: handed to the next waiting login, the sources taking turns.
    fn release(&self) {
        let mut state = self.lock();
        while let Some(waiter) = state.next_waiter() {
            if waiter.wake.send(true).is_ok() {
                return;
            }
        }
        state.running = state.running.saturating_sub(1);
    }

    /// Logins waiting and checks running, for tests.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.running, state.waiting, state.queues.len())
    }
}

impl State {
    /// The oldest waiting login of the source whose turn it is; that source goes to the back.
    fn next_waiter(&mut self) -> Option<Waiter> {
        let source = self.turn.pop_front()?;
        let queue = self.queues.get_mut(&source)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&source);
        } else {
            self.turn.push_back(source);
        }
        self.waiting = self.waiting.saturating_sub(usize::from(waiter.is_some()));
        waiter
    }

    /// Puts out the newest waiting login of `source`.
    fn put_out(&mut self, source: IpAddr) {
        let Some(queue) = self.queues.get_mut(&source) else {
            return;
        };
        if let Some(waiter) = queue.pop_back() {
            self.waiting = self.waiting.saturating_sub(1);
            let _ = waiter.wake.send(false);
        }
        if queue.is_empty() {
            self.forget(source);
        }
    }

    /// Takes out login `id` of `source`; false when it is no longer waiting.
    fn leave(&mut self, source: IpAddr, id: u64) -> bool {
        let Some(queue) = self.queues.get_mut(&source) else {
            return false;
        };
        let Some(at) = queue.iter().position(|w| w.id == id) else {
            return false;
        };
        queue.remove(at);
        self.waiting = self.waiting.saturating_sub(1);
        if queue.is_empty() {
            self.forget(source);
        }
        true
    }

    fn forget(&mut self, source: IpAddr) {
        self.queues.remove(&source);
        self.turn.retain(|s| *s != source);
    }
}

impl Drop for LoginPermit {
    fn drop(&mut self) {
        self.queue.release();
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let handed = {
            let mut state = self.queue.lock();
            // Not in the queue any more: it was handed a slot or put out, under this lock,
            // so the answer is already here.
            !state.leave(self.source, self.id) && matches!(self.woken.try_recv(), Ok(true))
        };
        if handed {
            // Handed a slot nobody will use (the login gave up): pass it on.
            self.queue.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source("2001:db8:1:3::1".parse().unwrap()));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source(mapped), IpAddr::from([10, 0, 0, 1]));
    }

    #[tokio::test]
    async fn sources_take_turns_and_one_cannot_crowd_out_another() {
        let queue = Arc::new(LoginQueue::new(1, 3, 100, Duration::from_secs(10)));
        let running = queue.enter(address(2)).await.unwrap();
        // The flooding source fills its own queue and is refused beyond it.
        let mut flood = Vec::new();
        for _ in 0..3 {
            let queue = queue.clone();
            flood.push(tokio::spawn(async move {
                queue.enter(address(2)).await.map(|_permit| ())
            }));
        }
        while queue.counts().1 < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(queue.enter(address(2)).await.err(), Some(Busy::SourceQueue));
        // Another source queues behind the flood's three, yet is served next.
        let other = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let permit = queue.enter(address(1)).await;
                let (_, waiting, _) = queue.counts();
                (permit.is_ok(), waiting)
            })
        };
        while queue.counts().1 < 4 {
            tokio::task::yield_now().await;
        }
        drop(running);
        let (served, waiting_then) = other.await.unwrap();
        assert!(served);
        assert_eq!(
            waiting_then, 2,
            "served after one of the flood's logins at most"
        );
        for login in flood {
            login.await.unwrap().unwrap();
        }
        assert_eq!(queue.counts(), (0, 0, 0), "every slot and place given back");
    }

    #[tokio::test]
    async fn a_full_queue_makes_room_for_a_source_with_fewer_waiting() {
        let queue = Arc::new(LoginQueue::new(1, 4, 4, Duration::from_secs(10)));
        let running = queue.enter(address(2)).await.unwrap();
        let mut flood = Vec::new();
        for _ in 0..4 {
            let queue = queue.clone();
            flood.push(tokio::spawn(
                async move { queue.enter(address(2)).await.err() },
            ));
        }
        while queue.counts().1 < 4 {
            tokio::task::yield_now().await;
        }
        let other = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.enter(address(1)).await.is_ok() })
        };
        // The flood's newest login is put out to make room.
        let mut put_out = 0;
        for login in flood.iter_mut() {
            if let Ok(Ok(Some(Busy::Wait))) =
                tokio::time::timeout(Duration::from_millis(200), login).await
            {
                put_out += 1;
            }
        }
        assert_eq!(put_out, 1);
        drop(running);
        assert!(other.await.unwrap());
    }

    #[tokio::test]
    async fn a_login_that_gives_up_leaves_the_queue_and_passes_its_slot_on() {
        let queue = Arc::new(LoginQueue::new(1, 4, 16, Duration::from_millis(50)));
        let running = queue.enter(address(1)).await.unwrap();
        assert_eq!(queue.enter(address(2)).await.err(), Some(Busy::Wait));
        assert_eq!(queue.counts(), (1, 0, 0));
        drop(running);
        assert_eq!(queue.counts(), (0, 0, 0));
        assert!(queue.enter(address(2)).await.is_ok());
    }
}
