//! Where nodes live: node name → the collective it last answered from, learned from replies, so
//! a directed request to a federation goes only to the member that holds each target. Bounded
//! and forgotten after a while; a target with no known home goes to every member once, and its
//! answer teaches its home.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Nodes whose home is remembered at most.
pub const MAX_HOMES: usize = 65_536;
/// How long a learnt home is trusted without another answer from there.
pub const HOME_TTL: Duration = Duration::from_secs(600);

/// The learnt homes.
pub struct Homes {
    known: Mutex<Known>,
    max: usize,
    ttl: Duration,
}

/// The map, and the earliest moment one of its homes can expire.
struct Known {
    map: HashMap<String, (String, Instant)>,
    /// No home expires before this: a full map is swept for expired homes only from then on.
    /// Without it, every new node a full map meets cost a sweep of the whole map, so a
    /// broadcast answered by more nodes than the map holds took time quadratic in its replies
    /// (a 200,000-node broadcast spent 87% of the edge's time here).
    next_expiry: Instant,
    /// Sweeps made, for the tests.
    sweeps: usize,
}

impl Homes {
    /// An empty map of at most `max` nodes, each kept for `ttl` after its last answer.
    pub fn new(max: usize, ttl: Duration) -> Homes {
        Homes {
            known: Mutex::new(Known {
                map: HashMap::new(),
                next_expiry: Instant::now(),
                sweeps: 0,
            }),
            max,
            ttl,
        }
    }

    /// `node` answered from `collective`. When the map is full, expired homes are dropped
    /// first (in one sweep, and no sweep again before another home can have expired); if none
    /// has expired, the new node is not learnt (it is reached by asking every member, as
    /// before).
    pub fn learn(&self, node: &str, collective: &str, now: Instant) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        let known = &mut *known;
        if let Some(home) = known.map.get_mut(node) {
            *home = (collective.to_string(), now);
            return;
        }
        if known.map.len() >= self.max {
            if now < known.next_expiry {
                return;
            }
            // Homes are only ever refreshed to later times, so the oldest one kept bounds the
            // next expiry from below.
            let mut oldest = now;
            known.map.retain(|_, (_, at)| {
                let keep = now.saturating_duration_since(*at) < self.ttl;
                if keep {
                    oldest = oldest.min(*at);
                }
                keep
            });
            known.next_expiry = oldest + self.ttl;
            known.sweeps += 1;
            if known.map.len() >= self.max {
                return;
            }
        }
        known
            .map
            .insert(node.to_string(), (collective.to_string(), now));
    }

    /// `node` did not answer: ask every member again next time.
    pub fn forget(&self, node: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.map.remove(node);
        }
    }

    /// The targets each of `members` gets: a target whose home is one of them goes there only;
    /// one with no known home (or a home outside `members`) goes to every member. Members that
    /// get no target are left out.
    pub fn split(
        &self,
        targets: &[String],
        members: &[String],
        now: Instant,
    ) -> BTreeMap<String, Vec<String>> {
        let mut shares: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let Ok(known) = self.known.lock() else {
            return members
                .iter()
                .map(|m| (m.clone(), targets.to_vec()))
                .collect();
        };
        for target in targets {
            let home = known
                .map
                .get(target)
                .filter(|(home, at)| {
                    now.saturating_duration_since(*at) < self.ttl && members.contains(home)
                })
                .map(|(home, _)| home);
            match home {
                Some(home) => shares.entry(home.clone()).or_default().push(target.clone()),
                None => {
                    for member in members {
                        shares
                            .entry(member.clone())
                            .or_default()
                            .push(target.clone());
                    }
                }
            }
        }
        shares
    }

    /// Nodes remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.known.lock().map_or(0, |known| known.map.len())
    }

    /// Sweeps of a full map so far.
    #[cfg(test)]
    fn sweeps(&self) -> usize {
        self.known.lock().map_or(0, |known| known.sweeps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn known_targets_go_home_and_unknown_ones_everywhere() {
        let homes = Homes::new(10, HOME_TTL);
        let now = Instant::now();
        let members = names(&["london", "tokyo"]);
        homes.learn("l1", "london", now);
        homes.learn("t1", "tokyo", now);
        homes.learn("x1", "paris", now);
        let shares = homes.split(&names(&["l1", "t1", "x1", "new"]), &members, now);
        assert_eq!(shares["london"], names(&["l1", "x1", "new"]));
        assert_eq!(shares["tokyo"], names(&["t1", "x1", "new"]));
        // Only tokyo holds what is asked for.
        let shares = homes.split(&names(&["t1"]), &members, now);
        assert_eq!(shares.keys().collect::<Vec<_>>(), ["tokyo"]);
        // Forgotten, or expired: asked everywhere again.
        homes.forget("t1");
        assert_eq!(homes.split(&names(&["t1"]), &members, now).len(), 2);
        let later = now + HOME_TTL;
        assert_eq!(homes.split(&names(&["l1"]), &members, later).len(), 2);
    }

    #[test]
    fn the_map_is_bounded_and_makes_room_from_expired_homes() {
        let homes = Homes::new(2, Duration::from_secs(10));
        let now = Instant::now();
        homes.learn("a", "london", now);
        homes.learn("b", "london", now);
        homes.learn("c", "london", now);
        assert_eq!(homes.len(), 2);
        // A known node moves without growing the map.
        homes.learn("a", "tokyo", now);
        assert_eq!(homes.len(), 2);
        let later = now + Duration::from_secs(11);
        homes.learn("c", "tokyo", later);
        assert_eq!(homes.len(), 1);
    }

    #[test]
    fn a_full_map_is_swept_once_until_a_home_can_expire() {
        let ttl = Duration::from_secs(10);
        let homes = Homes::new(100, ttl);
        let now = Instant::now();
        for i in 0..100 {
            homes.learn(&format!("n{i}"), "london", now);
        }
        // A broadcast answered by ten times the map: one sweep finds nothing to drop, and the
        // nodes after it are turned away without another.
        let soon = now + Duration::from_secs(1);
        for i in 100..1_100 {
            homes.learn(&format!("n{i}"), "tokyo", soon);
        }
        assert_eq!((homes.len(), homes.sweeps()), (100, 1));
        // A home refreshed meanwhile keeps its place past the first homes' expiry.
        homes.learn("n0", "london", soon);
        let expired = now + ttl;
        homes.learn("late", "tokyo", expired);
        assert_eq!((homes.len(), homes.sweeps()), (2, 2));
        let members = names(&["london", "tokyo"]);
        assert_eq!(homes.split(&names(&["n0"]), &members, expired).len(), 1);
        assert_eq!(homes.split(&names(&["n5"]), &members, expired).len(), 2);
    }
}
