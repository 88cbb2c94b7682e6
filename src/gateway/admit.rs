//! One collective's share of a request: map the caller, authorize the mapped caller, and build
//! the decision record. Only [`admit`] builds an [`Admitted`] value, and only recording it
//! ([`super::Gate::record_admitted`]) makes the [`Recorded`] value a publisher takes.

use crate::audit::{Event, Verdict};
use crate::policy::{Denied, Query};
use crate::rules::Rules;
use crate::security::CallerId;
use crate::security::identity::{Denial, Mapping};
use crate::wire::choria_v1::Filter;

use super::gate::{Gate, summarize};
use super::refusal::Refusal;

/// What one collective's share is decided on.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The realm the caller was verified in.
    pub realm: &'a str,
    /// The verified caller.
    pub caller: &'a CallerId,
    /// The collective (fedgate's name for it).
    pub collective: &'a str,
    /// The agent, as signed.
    pub agent: &'a str,
    /// The action, as signed.
    pub action: &'a str,
    /// The caller's filter.
    pub filter: &'a Filter,
}

/// A request the path admitted into one collective, not yet on the record.
#[derive(Debug)]
pub struct Admitted {
    mapped: CallerId,
    filter: Filter,
    event: Event,
}

impl Admitted {
    /// The caller id the collective sees.
    pub fn mapped(&self) -> &CallerId {
        &self.mapped
    }

    /// The caller's filter with policy's conditions added.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The decision record that will be written.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// Notes on the record that this is the `place`th copy of a body signed without its
    /// request id, sent again under another id (legacy MCollective).
    pub fn mark_duplicate(&mut self, place: u64) {
        self.event.duplicate = Some(place);
    }
}

/// An admitted request whose decision is on the record: the only thing that may be published.
#[derive(Debug)]
pub struct Recorded {
    admitted: Admitted,
    link: String,
}

impl Recorded {
    /// The caller id the collective sees.
    pub fn mapped(&self) -> &CallerId {
        &self.admitted.mapped
    }

    /// The filter to publish with.
    pub fn filter(&self) -> &Filter {
        &self.admitted.filter
    }

    /// The decision record as written.
    pub fn event(&self) -> &Event {
        &self.admitted.event
    }

    /// The decision record's id, which the completion record links to.
    pub fn link(&self) -> &str {
        &self.link
    }

    /// What it may be published as: the only value the ingresses' publishers take.
    pub fn cleared(&self) -> Cleared {
        debug_assert!(
            self.admitted.event.request_id.is_some(),
            "every ingress records the request id before admission"
        );
        Cleared {
            mapped: self.admitted.mapped.clone(),
            filter: self.admitted.filter.clone(),
            requestid: self.admitted.event.request_id.clone().unwrap_or_default(),
        }
    }
}

/// A recorded request's clearance to be published: the caller the collective sees, the
/// filter policy restricted, and the request id on the record. Only [`Recorded::cleared`]
/// builds one, so a publisher that takes one cannot send what was not admitted and recorded,
/// as another caller, with a wider filter or under another id.
#[derive(Clone, Debug)]
pub struct Cleared {
    mapped: CallerId,
    filter: Filter,
    requestid: String,
}

impl Cleared {
    /// The caller id the collective sees.
    pub fn mapped(&self) -> &CallerId {
        &self.mapped
    }

    /// The filter to publish with.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The request id on the record, which the request goes out with.
    pub fn requestid(&self) -> &str {
        &self.requestid
    }
}

/// A refusal at mapping or policy, with the record to write.
#[derive(Debug)]
pub struct NotAdmitted {
    /// Stage `map` (`unmapped`, `identity_denied`, `bad_mapping`, `bad_caller`) or
    /// `authorize` (`denied`), and what the caller is told.
    pub refusal: Refusal,
    /// What decided.
    pub why: Why,
    /// The record to write, marked with the refusal.
    pub event: Event,
}

/// What refused a request at admission.
#[derive(Debug)]
pub enum Why {
    /// The identity rules.
    Map(Denial),
    /// Policy.
    Policy(Denied),
}

/// Maps `ask.caller` into `ask.collective` and authorizes the mapped caller with `rules`. The
/// decision record starts from `event` (who, what, where, as the ingress saw it) and gets the
/// same fields on every ingress: mapped caller, caller's and restricted filter, rule and code.
pub fn admit(
    gate: &Gate,
    rules: &Rules,
    ask: &Ask<'_>,
    mut event: Event,
) -> Result<Admitted, Box<NotAdmitted>> {
    event.revision = rules.revision;
    event.collectives = vec![ask.collective.to_string()];
    event.caller_filter = summarize(ask.filter);
    let (mapped, identity_rule) = match rules.identity.map(ask.realm, ask.caller, ask.collective) {
        Mapping::Mapped { callerid, rule } => (callerid, rule.to_string()),
        Mapping::Denied(denial) => {
            let refusal = Refusal::unmapped(&denial, ask.caller.as_str(), ask.collective);
            return Err(refused(event, refusal, Why::Map(denial)));
        }
    };
    event.mapped_caller = Some(mapped.as_str().to_string());
    let query = Query {
        collective: ask.collective,
        agent: ask.agent,
        action: ask.action,
        caller: mapped.as_str(),
    };
    let mut filter = ask.filter.clone();
    let rule = match gate.authorize(rules, &query, &mut filter, &mut event) {
        Ok(rule) => rule,
        Err(denied) => {
            let refusal = Refusal::denied(&denied);
            return Err(refused(event, refusal, Why::Policy(denied)));
        }
    };
    event.filter = summarize(&filter);
    event.decision = Some(Verdict::Allow);
    event.stage = "authorize".into();
    event.code = "allowed".into();
    event.reason = match &event.restricted {
        Some(conditions) => {
            format!("allowed by {rule} on nodes matching {conditions}; mapped by {identity_rule}")
        }
        None => format!("allowed by {rule}; mapped by {identity_rule}"),
    };
    event.rule = Some(rule);
    Ok(Admitted {
        mapped,
        filter,
        event,
    })
}

/// Whether the identity rules let `caller` of `realm` into `collective` at all.
pub fn maps(rules: &Rules, realm: &str, caller: &CallerId, collective: &str) -> bool {
    matches!(
        rules.identity.map(realm, caller, collective),
        Mapping::Mapped { .. }
    )
}

fn refused(mut event: Event, refusal: Refusal, why: Why) -> Box<NotAdmitted> {
    refusal.mark(&mut event);
    Box::new(NotAdmitted {
        refusal,
        why,
        event,
    })
}

impl Gate {
    /// Writes an admitted request's decision record; only then may it be published.
    pub async fn record_admitted(
        &self,
        admitted: Admitted,
    ) -> Result<Recorded, (Admitted, crate::audit::AuditError)> {
        match self.record(admitted.event.clone()).await {
            Ok(link) => Ok(Recorded { admitted, link }),
            Err(err) => Err((admitted, err)),
        }
    }
}
