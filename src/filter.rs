//! Node-side filter matching with go-choria's semantics.

pub mod compound;
pub mod facts;
mod lists;

pub use self::lists::{match_agents, match_classes, match_identity};
use crate::wire::choria_v1::Filter;

/// What a node knows about itself, as the filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// The node's identity (certname).
    pub identity: &'a str,
    /// The node's facts, usually a JSON object.
    pub facts: &'a serde_json::Value,
    /// The configuration-management classes applied to the node.
    pub classes: &'a [String],
    /// The agents the node runs.
    pub agents: &'a [String],
}

/// Why a filter could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A compound (expr-lang) filter outside the subset fedgate evaluates
    /// ([`compound`]).
    #[error("compound filters are not supported: {0}")]
    CompoundUnsupported(String),
}

/// Decides whether a node should act on a request, as go-choria's MatchServerRequest does.
///
/// Identity, agent, class, fact and compound filters are checked in that order and the first
/// failure decides. A compound filter outside the subset [`compound`] reads is
/// [`FilterError::CompoundUnsupported`].
pub fn matches(filter: &Filter, node: &NodeView<'_>) -> Result<bool, FilterError> {
    if filter.is_empty() {
        return Ok(true);
    }
    let checks: [(bool, &dyn Fn() -> bool); 4] = [
        (!filter.identity.is_empty(), &|| {
            match_identity(&filter.identity, node.identity)
        }),
        (!filter.agent.is_empty(), &|| {
            match_agents(&filter.agent, node.agents)
        }),
        (!filter.cf_class.is_empty(), &|| {
            match_classes(&filter.cf_class, node.classes)
        }),
        (!filter.fact.is_empty(), &|| {
            facts::match_facts(&filter.fact, node.facts)
        }),
    ];
    let mut passed = 0;
    for (active, check) in checks {
        if !active {
            continue;
        }
        if !check() {
            return Ok(false);
        }
        passed += 1;
    }
    if !filter.compound.is_empty() {
        match compound::matches(&filter.compound, node) {
            Ok(true) => passed += 1,
            Ok(false) => return Ok(false),
            Err(err) => return Err(FilterError::CompoundUnsupported(err.0)),
        }
    }
    // go-choria's final rule: at least one kind of filter must have been applied and passed.
    Ok(passed > 0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::wire::choria_v1::{FactFilter, FactOperator};

    /// The node go-choria's protocol/filter_test.go describes.
    struct Node {
        facts: Value,
        classes: Vec<String>,
        agents: Vec<String>,
    }

    impl Node {
        fn new() -> Self {
            let strings = |items: &[&str]| items.iter().map(ToString::to_string).collect();
            Node {
                facts: json!({
                    "string": "hello world",
                    "inumber": 1,
                    "nested": {"string": "nested hello world", "inumber": 2}
                }),
                classes: strings(&["role::testing", "testing", "apache"]),
                agents: strings(&["apache", "rpcutil"]),
            }
        }

        fn check(&self, filter: &Filter) -> Result<bool, FilterError> {
            let view = NodeView {
                identity: "test.example.net",
                facts: &self.facts,
                classes: &self.classes,
                agents: &self.agents,
            };
            matches(filter, &view)
        }
    }

    fn fact(fact: &str, operator: FactOperator, value: &str) -> FactFilter {
        FactFilter {
            fact: fact.into(),
            operator,
            value: value.into(),
        }
    }

    fn compound(exprs: &[&str]) -> Vec<Vec<BTreeMap<String, String>>> {
        let group = |e: &&str| vec![BTreeMap::from([("expr".to_string(), e.to_string())])];
        exprs.iter().map(group).collect()
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert_eq!(Node::new().check(&Filter::default()), Ok(true));
    }

    #[test]
    fn matches_when_all_filters_match() {
        let filter = Filter {
            agent: vec!["apache".into()],
            cf_class: vec!["role::testing".into(), "/test/".into()],
            fact: vec![fact("nested.string", FactOperator::Match, "/hello/")],
            identity: vec!["/test/".into()],
            ..Filter::default()
        };
        assert_eq!(Node::new().check(&filter), Ok(true));
    }

    #[test]
    fn fails_when_some_filters_do_not_match() {
        let filter = Filter {
            agent: vec!["apache".into()],
            cf_class: vec!["role::test".into()],
            fact: vec![fact("nested.string", FactOperator::Match, "/meh/")],
            ..Filter::default()
        };
        assert_eq!(Node::new().check(&filter), Ok(false));
    }

    #[test]
    fn each_kind_alone_decides() {
        let node = Node::new();
        let with = |f: fn(&mut Filter)| {
            let mut filter = Filter::default();
            f(&mut filter);
            node.check(&filter)
        };
        assert_eq!(
            with(|f| f.identity = vec!["test.example.net".into()]),
            Ok(true)
        );
        assert_eq!(
            with(|f| f.identity = vec!["other".into(), "/^test\\./".into()]),
            Ok(true)
        );
        assert_eq!(with(|f| f.identity = vec!["other".into()]), Ok(false));
        assert_eq!(with(|f| f.agent = vec!["rpcutil".into()]), Ok(true));
        assert_eq!(
            with(|f| f.agent = vec!["rpcutil".into(), "puppet".into()]),
            Ok(false)
        );
        assert_eq!(with(|f| f.cf_class = vec!["APACHE".into()]), Ok(true));
        assert_eq!(with(|f| f.cf_class = vec!["nginx".into()]), Ok(false));
        assert_eq!(
            with(|f| f.fact = vec![fact("inumber", FactOperator::Ge, "1")]),
            Ok(true)
        );
        assert_eq!(
            with(|f| f.fact = vec![fact("string", FactOperator::Lt, "x.y")]),
            Ok(true)
        );
        assert_eq!(
            with(|f| f.fact = vec![fact("inumber", FactOperator::Lt, "x")]),
            Ok(false)
        );
    }

    #[test]
    fn passed_counts_only_applied_kinds() {
        // Every applied kind must pass; kinds left empty neither pass nor fail.
        let node = Node::new();
        let one = Filter {
            agent: vec!["apache".into()],
            ..Filter::default()
        };
        assert_eq!(node.check(&one), Ok(true));
        let two = Filter {
            identity: vec!["nope".into()],
            ..one.clone()
        };
        assert_eq!(node.check(&two), Ok(false));
    }

    #[test]
    fn compound_filters_count_as_a_kind_and_are_checked_last() {
        let node = Node::new();
        let only = Filter {
            compound: compound(&["with(\"apache\") && !with(\"inumber>1\")"]),
            ..Filter::default()
        };
        assert_eq!(node.check(&only), Ok(true));
        let failing = Filter {
            compound: compound(&["(\"nginx\" in classes)"]),
            ..Filter::default()
        };
        assert_eq!(node.check(&failing), Ok(false));
        let unsupported = Filter {
            compound: compound(&["include(agents, \"apache\")"]),
            ..Filter::default()
        };
        assert!(matches!(
            node.check(&unsupported),
            Err(FilterError::CompoundUnsupported(_))
        ));
        let earlier = Filter {
            agent: vec!["puppet".into()],
            ..unsupported
        };
        assert_eq!(
            node.check(&earlier),
            Ok(false),
            "an earlier failure decides first"
        );
    }

    #[test]
    fn malformed_compound_groups_fail_like_go_choria() {
        let node = Node::new();
        let mut bad_key = compound(&["a"]);
        bad_key[0][0] = BTreeMap::from([("query".to_string(), "a".to_string())]);
        let filter = Filter {
            compound: bad_key,
            ..Filter::default()
        };
        assert_eq!(node.check(&filter), Ok(false));
        let mut two_maps = compound(&["a"]);
        two_maps[0].push(BTreeMap::new());
        assert_eq!(
            node.check(&Filter {
                compound: two_maps,
                ..Filter::default()
            }),
            Ok(false)
        );
        let empty_group = Filter {
            compound: vec![vec![]],
            ..Filter::default()
        };
        assert_eq!(node.check(&empty_group), Ok(false));
    }
}
