//! Which rules of a file can match a caller, found without walking every rule.
//!
//! First match wins, so a decision must still consider rules in file order; the index only
//! narrows the walk to the rules whose caller field can match. It is built once per file at
//! parse time and does not depend on the groups file: exact tokens are indexed by name, and at
//! lookup the caller's own id and the names of the groups it belongs to are looked up, which is
//! what [`Rule::matches_caller`](super::actionpolicy::Rule::matches_caller) checks one rule at a
//! time. All `/regex/` tokens of a file run as one [`RegexSet`], so a caller id is scanned once
//! however many regex rules there are.

use std::collections::HashMap;

use regex::{Regex, RegexSet, RegexSetBuilder};

use super::actionpolicy::{CallerToken, Field, Groups, Rule};

/// Compiled-size limit for one file's combined caller regexes; a file over it falls back to
/// checking its regexes one by one.
const REGEX_SET_BYTES: usize = 32 << 20;

/// The regex callers of one file.
#[derive(Clone, Debug)]
enum Regexes {
    /// No rule has a regex caller.
    None,
    /// Every regex token in one set; pattern `i` belongs to rule `rules[i]`.
    Set { set: RegexSet, rules: Vec<u32> },
    /// The set was too large to compile: each token with its rule.
    Each(Vec<(u32, Regex)>),
}

/// The rule indices a caller can match, by how the caller field is written.
#[derive(Clone, Debug)]
pub struct CallerIndex {
    /// Exact tokens (caller ids or group names) to the rules naming them, ascending.
    by_name: HashMap<String, Vec<u32>>,
    /// Rules whose caller field is `*`, ascending.
    any: Vec<u32>,
    regexes: Regexes,
}

impl CallerIndex {
    /// Indexes `rules`; rule `i` of the slice is index `i`.
    pub fn build(rules: &[Rule]) -> CallerIndex {
        CallerIndex::build_limited(rules, REGEX_SET_BYTES)
    }

    fn build_limited(rules: &[Rule], regex_set_bytes: usize) -> CallerIndex {
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        let mut any = Vec::new();
        let mut patterns = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            // MAX_RULES keeps this far below u32::MAX.
            let index = index as u32;
            let Field::List(tokens) = &rule.callers else {
                any.push(index);
                continue;
            };
            for token in tokens {
                match token {
                    CallerToken::Exact(name) => {
                        let list = by_name.entry(name.clone()).or_default();
                        if list.last() != Some(&index) {
                            list.push(index);
                        }
                    }
                    CallerToken::Regex(re) => patterns.push((index, re.clone())),
                }
            }
        }
        let regexes = if patterns.is_empty() {
            Regexes::None
        } else {
            match RegexSetBuilder::new(patterns.iter().map(|(_, re)| re.as_str()))
                .size_limit(regex_set_bytes)
                .build()
            {
                Ok(set) => Regexes::Set {
                    set,
                    rules: patterns.iter().map(|(rule, _)| *rule).collect(),
                },
                Err(_) => Regexes::Each(patterns),
            }
        };
        CallerIndex {
            by_name,
            any,
            regexes,
        }
    }

    /// Fills `out` with the indices of the rules whose caller field matches `caller`, ascending
    /// and without repeats.
    pub fn candidates(&self, caller: &str, groups: &Groups, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.any);
        if let Some(rules) = self.by_name.get(caller) {
            out.extend_from_slice(rules);
        }
        for group in groups.of(caller) {
            if let Some(rules) = self.by_name.get(group.as_str()) {
                out.extend_from_slice(rules);
            }
        }
        match &self.regexes {
            Regexes::None => {}
            Regexes::Set { set, rules } => {
                out.extend(set.matches(caller).iter().map(|pattern| rules[pattern]));
            }
            Regexes::Each(each) => {
                out.extend(
                    each.iter()
                        .filter(|(_, re)| re.is_match(caller))
                        .map(|(rule, _)| *rule),
                );
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyFile;

    const POLICY: &str = "policy default deny
allow\t*\tstatus\t*\t*
deny\tchoria=bob.mcollective\t*\t*\t*
allow\tadmins /^choria=ops-/ admins\t*\t*\t*
allow\tchoria=alice.mcollective choria=alice.mcollective\tping\t*\t*
deny\t/bob/ /^choria=b/\t*\t*\t*
allow\tdevs choria=carol.mcollective\t*\tcountry=uk\t*
allow\tauditors\t*\t*\t*
allow\t/mcollective$/\tping\t*\t*
";

    const GROUPS: &str =
        "admins choria=alice.mcollective choria=ops-1.mcollective choria=alice.mcollective
devs choria=bob.mcollective choria=dave.mcollective
auditors choria=erin.mcollective
";

    const CALLERS: [&str; 9] = [
        "choria=alice.mcollective",
        "choria=bob.mcollective",
        "choria=carol.mcollective",
        "choria=dave.mcollective",
        "choria=erin.mcollective",
        "choria=ops-2.mcollective",
        "auditors",
        "admins",
        "up=nobody",
    ];

    /// The rules `matches_caller` selects, checked one by one: what the index must reproduce.
    fn linear(file: &PolicyFile, caller: &str, groups: &Groups) -> Vec<u32> {
        (0u32..)
            .zip(&file.rules)
            .filter(|(_, rule)| rule.matches_caller(caller, groups))
            .map(|(index, _)| index)
            .collect()
    }

    #[test]
    fn candidates_are_the_rules_matches_caller_selects_in_file_order() {
        let file = PolicyFile::parse("index.policy", POLICY).unwrap();
        let groups = Groups::parse("groups", GROUPS).unwrap();
        let set = CallerIndex::build(&file.rules);
        assert!(matches!(set.regexes, Regexes::Set { .. }));
        // A size limit no set fits in forces the one-by-one fallback.
        let each = CallerIndex::build_limited(&file.rules, 1);
        assert!(matches!(each.regexes, Regexes::Each(_)));
        let mut out = Vec::new();
        for caller in CALLERS {
            let expected = linear(&file, caller, &groups);
            assert!(!expected.is_empty(), "{caller} matches the `*` rule");
            for index in [&set, &each] {
                index.candidates(caller, &groups, &mut out);
                assert_eq!(out, expected, "{caller}");
            }
        }
        // Spot checks that the comparison is not vacuous: bob hits rules 0,1,4,5,7; alice is in
        // `admins` and named directly.
        set.candidates("choria=bob.mcollective", &groups, &mut out);
        assert_eq!(out, [0, 1, 4, 5, 7]);
        set.candidates("choria=alice.mcollective", &groups, &mut out);
        assert_eq!(out, [0, 2, 3, 7]);
        set.candidates("choria=erin.mcollective", &groups, &mut out);
        assert_eq!(out, [0, 6, 7]);
    }

    #[test]
    fn without_groups_group_names_match_only_as_caller_ids() {
        let file = PolicyFile::parse("index.policy", POLICY).unwrap();
        let none = Groups::default();
        let mut out = Vec::new();
        let index = CallerIndex::build(&file.rules);
        for caller in CALLERS {
            index.candidates(caller, &none, &mut out);
            assert_eq!(out, linear(&file, caller, &none), "{caller}");
        }
        index.candidates("admins", &none, &mut out);
        assert_eq!(out, [0, 2]);
    }
}
