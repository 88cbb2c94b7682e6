//! ArcSight Common Event Format (CEF 0) lines for SIEMs: one line per decision record.
//!
//! `CEF:0|fedgate|fedgate|<version>|<code>|<name>|<severity>|<extensions>`: header fields escape
//! `\` and `|`; extension values escape `\`, `=` and line breaks, as the CEF specification
//! requires. Severity: 3 for an allowed request, 5 for a policy or mapping refusal, 7 for a
//! request that failed verification (bad signature, unknown CA, expired), 8 when it could not be
//! audited.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::record::{Event, Kind, Record, Verdict};

/// The CEF line of `record`.
pub fn line(record: &Record) -> String {
    let e = &record.event;
    let name = match e.decision {
        Some(Verdict::Allow) => "rpc request allowed",
        Some(Verdict::Deny) => "rpc request refused",
        None => kind_name(record.kind),
    };
    let code = if e.code.is_empty() {
        kind_name(record.kind)
    } else {
        e.code.as_str()
    };
    let extensions: Vec<String> = extensions(record)
        .iter()
        .map(|(key, value)| format!("{key}={}", escape_value(value)))
        .collect();
    format!(
        "CEF:0|fedgate|fedgate|{}|{}|{}|{}|{}",
        escape_header(env!("CARGO_PKG_VERSION")),
        escape_header(code),
        escape_header(name),
        severity(e),
        extensions.join(" ")
    )
}

/// 3 for an allowed request; for a refusal 7 at decode or verify, 8 at audit, else 5; 1 for a
/// record with no decision.
fn severity(e: &Event) -> u8 {
    match (e.decision, e.stage.as_str()) {
        (Some(Verdict::Allow), _) => 3,
        (Some(Verdict::Deny), "decode" | "verify") => 7,
        (Some(Verdict::Deny), "audit") => 8,
        (Some(Verdict::Deny), _) => 5,
        (None, _) => 1,
    }
}

/// The extension fields of `record` in order, unescaped; empty ones are left out.
fn extensions(record: &Record) -> Vec<(&'static str, String)> {
    let e = &record.event;
    let mut ext: Vec<(&str, String)> = Vec::new();
    if let Ok(time) = OffsetDateTime::parse(&record.time, &Rfc3339) {
        ext.push(("rt", (time.unix_timestamp_nanos() / 1_000_000).to_string()));
    }
    ext.push(("dvchost", record.instance.clone()));
    ext.push(("externalId", record.id.clone()));
    match e.decision {
        Some(Verdict::Allow) => ext.push(("outcome", "success".into())),
        Some(Verdict::Deny) => ext.push(("outcome", "failure".into())),
        None => {}
    }
    let caller = e
        .caller
        .clone()
        .or_else(|| e.claimed_caller.as_ref().map(|c| format!("{c} (claimed)")));
    if let Some(caller) = caller {
        ext.push(("suser", caller));
    }
    if let Some(mapped) = &e.mapped_caller {
        ext.push(("duser", mapped.clone()));
    }
    if let (Some(agent), Some(action)) = (&e.agent, &e.action) {
        ext.push(("act", format!("{agent}.{action}")));
    }
    if !e.edge.is_empty() {
        ext.push(("app", e.edge.clone()));
    }
    ext.extend(custom_fields(e));
    if !e.reason.is_empty() {
        ext.push(("reason", e.reason.clone()));
    }
    ext
}

/// The labelled custom fields: request id, collectives, rule, realm, filter and restriction as
/// `cs1` to `cs6`, the reply count as `cn1`.
fn custom_fields(e: &Event) -> Vec<(&'static str, String)> {
    let mut ext = Vec::new();
    let labelled = [
        ("cs1", "cs1Label", "requestId", e.request_id.clone()),
        (
            "cs2",
            "cs2Label",
            "collectives",
            Some(e.collectives.join(",")),
        ),
        ("cs3", "cs3Label", "rule", e.rule.clone()),
        ("cs4", "cs4Label", "realm", Some(e.realm.clone())),
        ("cs5", "cs5Label", "filter", Some(e.filter.clone())),
        ("cs6", "cs6Label", "restricted", e.restricted.clone()),
    ];
    for (key, label_key, label, value) in labelled {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            ext.push((key, value));
            ext.push((label_key, label.into()));
        }
    }
    if let Some(replies) = e.replies {
        ext.push(("cn1", replies.to_string()));
        ext.push(("cn1Label", "replies".into()));
    }
    ext
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Header => "header",
        Kind::Decision => "decision",
        Kind::Completion => "completion",
        Kind::Correction => "correction",
        Kind::Checkpoint => "checkpoint",
    }
}

/// Header fields: backslash and pipe are escaped; line breaks are not allowed and become spaces.
fn escape_header(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Extension values: backslash, equals sign and line breaks are escaped.
fn escape_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{ChainState, seal};

    fn sealed(event: Event) -> Record {
        let mut state = ChainState::genesis();
        seal(
            Kind::Decision,
            "gw1:abc".into(),
            "gw1",
            "2026-11-21T10:00:00.250000Z".into(),
            event,
            &mut state,
        )
        .0
    }

    #[test]
    fn a_refusal_becomes_one_escaped_cef_line() {
        let record = sealed(Event {
            edge: "federation".into(),
            realm: "prod".into(),
            caller: Some("choria=bob.mcollective".into()),
            mapped_caller: Some("choria=bob.mcollective".into()),
            request_id: Some("r1".into()),
            collectives: vec!["london".into(), "tokyo".into()],
            agent: Some("rpcutil".into()),
            action: Some("inventory".into()),
            decision: Some(Verdict::Deny),
            stage: "authorize".into(),
            rule: Some("rpcutil.policy:2".into()),
            code: "denied|explicit".into(),
            reason: "deny a=b\\c\nnext".into(),
            ..Event::default()
        });
        let line = line(&record);
        assert!(
            line.starts_with(&format!(
                "CEF:0|fedgate|fedgate|{}|denied\\|explicit|rpc request refused|5|rt=1795255200250 dvchost=gw1 externalId=gw1:abc outcome=failure suser=choria\\=bob.mcollective duser=choria\\=bob.mcollective act=rpcutil.inventory app=federation cs1=r1 cs1Label=requestId cs2=london,tokyo cs2Label=collectives cs3=rpcutil.policy:2 cs3Label=rule cs4=prod cs4Label=realm ",
                env!("CARGO_PKG_VERSION")
            )),
            "{line}"
        );
        assert!(line.ends_with("reason=deny a\\=b\\\\c\\nnext"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn severity_follows_the_stage_that_refused() {
        let severity = |decision, stage: &str| {
            let record = sealed(Event {
                decision,
                stage: stage.into(),
                ..Event::default()
            });
            line(&record).split('|').nth(6).unwrap().to_string()
        };
        assert_eq!(severity(Some(Verdict::Allow), "authorize"), "3");
        assert_eq!(severity(Some(Verdict::Deny), "authorize"), "5");
        assert_eq!(severity(Some(Verdict::Deny), "verify"), "7");
        assert_eq!(severity(Some(Verdict::Deny), "audit"), "8");
    }
}
