//! The routing table of a served federation: how it reaches each collective.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, Member};

/// How a served federation reaches one collective.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// The collective is a member: publish on its network.
    Direct,
    /// The collective is behind this member federation: forward into its network.
    Via(String),
}

impl Config {
    /// The collectives a served federation reaches, and how: directly, or through a member
    /// federation. A collective reachable two ways is refused as ambiguous.
    pub fn routes(&self, federation: &str) -> Result<BTreeMap<String, Route>, String> {
        let fed = self
            .federations
            .get(federation)
            .ok_or_else(|| format!("no federation {federation}"))?;
        let mut routes = BTreeMap::new();
        for member in &fed.members {
            if member == federation {
                return Err(format!("{federation} lists itself as a member"));
            }
            let reached: Vec<(String, Route)> = match self.member(member) {
                Some(Member::Collective(_)) => vec![(member.clone(), Route::Direct)],
                Some(Member::Legacy(legacy)) if legacy.choria.is_none() => {
                    return Err(format!(
                        "{member} is a legacy collective; set legacy.{member}.choria to the Choria collective fedgate serves it on"
                    ));
                }
                Some(Member::Legacy(_)) => vec![(member.clone(), Route::Direct)],
                Some(Member::Federation(_)) => {
                    let mut visited = BTreeSet::from([federation.to_string(), member.clone()]);
                    self.reach(member, &mut visited)
                        .into_iter()
                        .map(|c| (c, Route::Via(member.clone())))
                        .collect()
                }
                None => {
                    return Err(format!(
                        "{member} is neither a collective, a legacy collective nor a federation in this file"
                    ));
                }
            };
            for (collective, route) in reached {
                if let Some(previous) = routes.insert(collective.clone(), route.clone()) {
                    return Err(format!(
                        "collective {collective} is reachable both {previous:?} and {route:?}"
                    ));
                }
            }
        }
        Ok(routes)
    }

    /// Names of the collectives behind a member federation, following federations recursively.
    fn reach(&self, federation: &str, visited: &mut BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Some(fed) = self.federations.get(federation) else {
            return out;
        };
        for member in &fed.members {
            if self.federations.contains_key(member) {
                if visited.insert(member.clone()) {
                    out.extend(self.reach(member, visited));
                }
            } else {
                out.insert(member.clone());
            }
        }
        out
    }
}
