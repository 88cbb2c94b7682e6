//! Simulated nodes: identity, collectives, facts, classes and agents, and a generator for fleets.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::agents::AGENTS;
use fedgate::filter::NodeView;

/// One simulated Choria server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The node's identity, as it appears in `senderid` and `<collective>.node.<identity>`.
    pub identity: String,
    /// Collectives the node belongs to; the first is its main collective.
    pub collectives: Vec<String>,
    /// Facts, a JSON object.
    pub facts: Value,
    /// Configuration-management classes.
    pub classes: Vec<String>,
    /// Agents the node runs.
    pub agents: Vec<String>,
}

impl NodeSpec {
    /// The view the filter matcher sees.
    pub fn view(&self) -> NodeView<'_> {
        NodeView {
            identity: &self.identity,
            facts: &self.facts,
            classes: &self.classes,
            agents: &self.agents,
        }
    }

    /// The main collective.
    pub fn main_collective(&self) -> &str {
        self.collectives.first().map(String::as_str).unwrap_or("")
    }

    /// True when the node runs `agent`.
    pub fn has_agent(&self, agent: &str) -> bool {
        self.agents.iter().any(|a| a == agent)
    }
}

const COUNTRIES: [&str; 4] = ["uk", "jp", "us", "de"];
const ROLES: [&str; 5] = ["web", "db", "cache", "queue", "batch"];
const CPUS: [u64; 4] = [2, 4, 8, 16];

/// Generates `count` nodes named `<prefix>-NNNN` with varied, deterministic facts and classes.
///
/// Node `i` has `country = COUNTRIES[i % 4]` (uk, jp, us, de), `role = ROLES[i % 5]`,
/// `cpus = CPUS[(i / 7) % 4]`, `environment` production unless `i % 10 >= 7`, and
/// `os.release.major` 11 when `i % 3 == 0`, else 12. Classes are `base`, `role::<role>`,
/// `country::<country>`, plus `production` for production nodes.
pub fn generate(prefix: &str, count: usize, collectives: &[String]) -> Vec<NodeSpec> {
    (0..count)
        .map(|i| generated_node(prefix, i, collectives))
        .collect()
}

fn generated_node(prefix: &str, i: usize, collectives: &[String]) -> NodeSpec {
    let identity = format!("{prefix}-{i:04}");
    let country = COUNTRIES[i % COUNTRIES.len()];
    let role = ROLES[i % ROLES.len()];
    let production = i % 10 < 7;
    let environment = if production {
        "production"
    } else {
        "development"
    };
    let facts = json!({
        "identity": identity,
        "country": country,
        "role": role,
        "cpus": CPUS[(i / 7) % CPUS.len()],
        "memory_gb": 4 * (1 + i % 8),
        "environment": environment,
        "rack": format!("r{:02}", i / 20),
        "os": {"family": "debian", "release": {"major": if i.is_multiple_of(3) { 11 } else { 12 }}},
        "choria": {"collectives": collectives},
    });
    let mut classes = vec![
        "base".to_string(),
        format!("role::{role}"),
        format!("country::{country}"),
    ];
    if production {
        classes.push("production".into());
    }
    NodeSpec {
        identity,
        collectives: collectives.to_vec(),
        facts,
        classes,
        agents: AGENTS.iter().map(|a| a.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_fleet_is_varied_and_deterministic() {
        let nodes = generate("london", 200, &["london".to_string()]);
        assert_eq!(nodes.len(), 200);
        assert_eq!(nodes[7].identity, "london-0007");
        let uk = nodes.iter().filter(|n| n.facts["country"] == "uk").count();
        assert_eq!(uk, 50);
        let prod = nodes
            .iter()
            .filter(|n| n.classes.iter().any(|c| c == "production"))
            .count();
        assert_eq!(prod, 140);
        assert_eq!(generate("london", 200, &["london".to_string()]), nodes);
        assert!(
            nodes
                .iter()
                .all(|n| n.has_agent("rpcutil") && n.main_collective() == "london")
        );
    }
}
