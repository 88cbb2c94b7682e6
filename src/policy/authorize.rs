//! `authorize()`: a pure decision over a loaded [`PolicySet`].

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::actionpolicy::{Conditions, Effect, Field, PolicyFile};
use super::set::PolicySet;
use crate::filter::{facts, match_classes};

/// What is asked: who calls which action of which agent in which collective.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The target collective (its name in fedgate's config).
    pub collective: &'a str,
    /// The agent.
    pub agent: &'a str,
    /// The action.
    pub action: &'a str,
    /// The caller id as the target collective will see it (after identity mapping).
    pub caller: &'a str,
}

/// Where the decision is made.
#[derive(Clone, Copy, Debug)]
pub enum Vantage<'a> {
    /// At the gateway, which cannot see any node's facts: an allow rule with conditions permits
    /// the request with those conditions added to its filter, a deny rule with conditions refuses
    /// it (fail closed).
    Gateway,
    /// On a node, with what a Choria server would read from its fact source and classes file.
    /// `None` is a missing source: no facts match, and a rule naming classes is an error (deny).
    Node {
        /// The node's facts.
        facts: Option<&'a Value>,
        /// The node's classes.
        classes: Option<&'a [String]>,
    },
}

/// Which line decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A rule: file (relative to the policy directory) and 1-based line.
    Rule {
        /// The policy file.
        file: Arc<str>,
        /// The rule's line.
        line: usize,
    },
    /// No rule matched: the file's default (or the gateway-wide setting when `file` is `None`).
    Default {
        /// The file whose default applied, if any.
        file: Option<Arc<str>>,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Rule { file, line } => write!(f, "{file}:{line}"),
            Source::Default { .. } => f.write_str("default"),
        }
    }
}

impl Source {
    /// The policy file involved, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            Source::Rule { file, .. } => Some(file),
            Source::Default { file } => file.as_deref(),
        }
    }
}

/// The request may proceed.
#[derive(Clone, Debug)]
pub struct Permit {
    /// Which line decided.
    pub source: Source,
    /// At the gateway: fact and class conditions to add to the request's filter, so only the
    /// nodes the rule covers act.
    pub restrict: Option<Conditions>,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyKind {
    /// A matching `deny` rule.
    Explicit,
    /// No rule matched and the file's default is deny.
    Default,
    /// No policy file applies and the gateway-wide setting is deny.
    Unconfigured,
    /// The first matching `deny` rule has fact or class conditions the gateway cannot check.
    Conditional,
    /// The rule could not be evaluated (on a node: classes named but no classes source).
    Error,
}

impl DenyKind {
    /// The label used in metrics and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyKind::Explicit => "explicit",
            DenyKind::Default => "default",
            DenyKind::Unconfigured => "unconfigured",
            DenyKind::Conditional => "conditional",
            DenyKind::Error => "error",
        }
    }
}

/// The request is refused.
#[derive(Clone, Debug)]
pub struct Denied {
    /// Which line decided.
    pub source: Source,
    /// What kind of denial.
    pub kind: DenyKind,
    /// A sentence for the caller and the audit trail.
    pub reason: String,
}

/// The outcome of [`authorize`].
#[derive(Clone, Debug)]
pub enum Decision {
    /// Allowed, perhaps on matching nodes only.
    Permit(Permit),
    /// Refused.
    Denied(Denied),
}

impl Decision {
    /// True for [`Decision::Permit`].
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Permit(_))
    }

    /// Which line decided.
    pub fn source(&self) -> &Source {
        match self {
            Decision::Permit(p) => &p.source,
            Decision::Denied(d) => &d.source,
        }
    }

    /// A sentence explaining the decision.
    pub fn reason(&self) -> String {
        match self {
            Decision::Denied(denied) => denied.reason.clone(),
            Decision::Permit(Permit {
                source,
                restrict: Some(conditions),
            }) => format!(
                "allowed by {source} on nodes matching {}",
                describe(conditions)
            ),
            Decision::Permit(Permit {
                source: Source::Default { file: Some(file) },
                ..
            }) => format!("allowed by the default policy in {file}"),
            Decision::Permit(Permit {
                source: Source::Default { file: None },
                ..
            }) => "no policy file applies and unconfigured agents are allowed".into(),
            Decision::Permit(Permit { source, .. }) => format!("allowed by {source}"),
        }
    }
}

/// `facts [a=b c>1] classes [x]` for messages.
pub fn describe(conditions: &Conditions) -> String {
    let mut parts = Vec::new();
    if let Some(facts) = conditions.facts.list() {
        let facts: Vec<String> = facts.iter().map(ToString::to_string).collect();
        parts.push(format!("facts {}", facts.join(" ")));
    }
    if let Some(classes) = conditions.classes.list() {
        parts.push(format!("classes {}", classes.join(" ")));
    }
    parts.join(" and ")
}

/// Decides `query` with `set`, from `vantage`. Pure: the same inputs give the same decision.
///
/// The file is `<collective>/<agent>.policy`, else `<agent>.policy`, else `default.policy`;
/// with none, the set's `unconfigured` setting decides. In the file, the first rule whose caller,
/// action, facts and classes all match decides; with none, the last `policy default` line does,
/// or, without one, the `unconfigured` setting (Choria's `allow_unconfigured`).
pub fn authorize(set: &PolicySet, query: &Query<'_>, vantage: Vantage<'_>) -> Decision {
    let Some(file) = set.lookup(query.collective, query.agent) else {
        return match set.unconfigured() {
            Effect::Allow => Decision::Permit(Permit {
                source: Source::Default { file: None },
                restrict: None,
            }),
            Effect::Deny => Decision::Denied(Denied {
                source: Source::Default { file: None },
                kind: DenyKind::Unconfigured,
                reason: format!(
                    "no policy file applies to agent {}{} and unconfigured agents are denied",
                    query.agent,
                    if query.collective.is_empty() {
                        String::new()
                    } else {
                        format!(" in {}", query.collective)
                    }
                ),
            }),
        };
    };
    evaluate(file, set, query, vantage)
}

fn evaluate(
    file: &PolicyFile,
    set: &PolicySet,
    query: &Query<'_>,
    vantage: Vantage<'_>,
) -> Decision {
    let mut scratch = Vec::new();
    for rule in file.rules_for(query.caller, set.groups(), &mut scratch) {
        if !rule.matches_action(query.action) {
            continue;
        }
        let source = Source::Rule {
            file: file.name.clone(),
            line: rule.line,
        };
        let conditions = &rule.conditions;
        match vantage {
            Vantage::Node { facts, classes } => match node_matches(conditions, facts, classes) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(reason) => {
                    return Decision::Denied(Denied {
                        source,
                        kind: DenyKind::Error,
                        reason: format!("{reason} (rule {}:{})", file.name, rule.line),
                    });
                }
            },
            Vantage::Gateway if conditions.is_unconditional() => {}
            Vantage::Gateway => {
                return match rule.effect {
                    Effect::Allow => Decision::Permit(Permit {
                        source,
                        restrict: Some(conditions.clone()),
                    }),
                    Effect::Deny => Decision::Denied(Denied {
                        kind: DenyKind::Conditional,
                        reason: format!(
                            "{}:{} denies {} on nodes matching {}; the gateway cannot see node facts, so it refuses the request (fail closed)",
                            file.name,
                            rule.line,
                            query.caller,
                            describe(conditions)
                        ),
                        source,
                    }),
                };
            }
        }
        return match rule.effect {
            Effect::Allow => Decision::Permit(Permit {
                source,
                restrict: None,
            }),
            Effect::Deny => Decision::Denied(Denied {
                kind: DenyKind::Explicit,
                reason: format!(
                    "Denying based on explicit 'deny' policy in {}:{}",
                    file.name, rule.line
                ),
                source,
            }),
        };
    }
    let source = Source::Default {
        file: Some(file.name.clone()),
    };
    match file.default.unwrap_or(set.unconfigured()) {
        Effect::Allow => Decision::Permit(Permit {
            source,
            restrict: None,
        }),
        Effect::Deny => Decision::Denied(Denied {
            source,
            kind: DenyKind::Default,
            reason: format!("Denying based on default policy in {}", file.name),
        }),
    }
}

/// go-choria's `MatchesFacts` then `MatchesClasses`; Err is a rule that errors (deny).
fn node_matches(
    conditions: &Conditions,
    node_facts: Option<&Value>,
    node_classes: Option<&[String]>,
) -> Result<bool, String> {
    let empty = Value::Object(serde_json::Map::new());
    let facts_match = match &conditions.facts {
        Field::Any => true,
        Field::List(filters) => facts::match_facts(filters, node_facts.unwrap_or(&empty)),
    };
    let classes_match = match (&conditions.classes, node_classes) {
        (Field::Any, _) => true,
        (Field::List(_), None) => return Err("do not know how to resolve classes".into()),
        (Field::List(needles), Some(classes)) => match_classes(needles, classes),
    };
    Ok(facts_match && classes_match)
}
