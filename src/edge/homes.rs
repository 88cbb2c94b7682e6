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
    map: Mutex<HashMap<String, (String, Instant)>>,
    max: usize,
    ttl: Duration,
}

impl Homes {
    /// An empty map of at most `max` nodes, each kept for `ttl` after its last answer.
    pub fn new(max: usize, ttl: Duration) -> Homes {
        Homes {
            map: Mutex::new(HashMap::new()),
            max,
            ttl,
        }
    }

    /// `node` answered from `collective`. When the map is full, expired homes are dropped
    /// first; if none has expired, the new node is not learnt (it is reached by asking every
    /// member, as before).
    pub fn learn(&self, node: &str, collective: &str, now: Instant) {
        let Ok(mut map) = self.map.lock() else { return };
        if let Some(home) = map.get_mut(node) {
            *home = (collective.to_string(), now);
            return;
        }
        if map.len() >= self.max {
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.ttl);
            if map.len() >= self.max {
                return;
            }
        }
        map.insert(node.to_string(), (collective.to_string(), now));
    }

    /// `node` did not answer: ask every member again next time.
    pub fn forget(&self, node: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(node);
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
        let Ok(map) = self.map.lock() else {
            return members
                .iter()
                .map(|m| (m.clone(), targets.to_vec()))
                .collect();
        };
        for target in targets {
            let home = map
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
        self.map.lock().map_or(0, |map| map.len())
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
}
