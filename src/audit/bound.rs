//! The bounds of what a record holds: every text a caller could choose (above all, what a
//! request claims before it is verified) is cut to a documented length, and control characters
//! are escaped, before the record is sealed. So no request can make a record larger than these
//! limits allow, and no field can hold a line break or a terminal escape that would forge a row
//! in `fedgate audit query` or `audit tail`.

use super::record::Event;

/// Longest caller id kept (`caller`, `claimed_caller`, `mapped_caller`), in characters.
pub const MAX_CALLER: usize = 256;
/// Longest request id kept.
pub const MAX_REQUEST_ID: usize = 64;
/// Longest agent, action, collective or input name kept.
pub const MAX_NAME: usize = 128;
/// Most collectives and input names kept.
pub const MAX_NAMES: usize = 64;
/// Longest reason, rule or filter summary kept.
pub const MAX_TEXT: usize = 2048;

/// Cuts `event`'s texts to the limits above and escapes control characters in them.
pub fn bound(event: &mut Event) {
    for caller in [
        &mut event.caller,
        &mut event.claimed_caller,
        &mut event.mapped_caller,
    ]
    .into_iter()
    .flatten()
    {
        fit(caller, MAX_CALLER);
    }
    for id in [&mut event.request_id, &mut event.legacy_request_id]
        .into_iter()
        .flatten()
    {
        fit(id, MAX_REQUEST_ID);
    }
    for name in [&mut event.agent, &mut event.action].into_iter().flatten() {
        fit(name, MAX_NAME);
    }
    for names in [&mut event.collectives, &mut event.data_keys] {
        names.truncate(MAX_NAMES);
        for name in names.iter_mut() {
            fit(name, MAX_NAME);
        }
    }
    for text in [
        &mut event.reason,
        &mut event.filter,
        &mut event.caller_filter,
        &mut event.edge,
        &mut event.realm,
        &mut event.stage,
        &mut event.code,
    ] {
        fit(text, MAX_TEXT);
    }
    for text in [&mut event.rule, &mut event.restricted]
        .into_iter()
        .flatten()
    {
        fit(text, MAX_TEXT);
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`), for one line of a table.
pub fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `text` with control characters escaped (`\n`, `\u{1b}`) and cut to `max` characters, the
/// cut marked with `…`. Untouched (and not copied) when it is already clean and short.
pub fn fit(text: &mut String, max: usize) {
    let clean = !text.chars().any(char::is_control);
    if clean && text.len() <= max {
        return;
    }
    let escaped = match escaped(text) {
        std::borrow::Cow::Borrowed(_) => std::mem::take(text),
        std::borrow::Cow::Owned(escaped) => escaped,
    };
    *text = match escaped.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if escaped.chars().count() > max => format!("{}…", &escaped[..cut]),
        _ => escaped,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_caller_cannot_forge_a_row_or_grow_a_record() {
        let forged = format!(
            "choria=x\n2026-12-04T00:00:00Z allow up=admin \u{1b}[32m{}",
            "A".repeat(60_000)
        );
        let mut event = Event {
            claimed_caller: Some(forged),
            request_id: Some("r".repeat(500)),
            collectives: vec!["c".repeat(300); 100],
            reason: "bad\r\nline".into(),
            ..Event::default()
        };
        bound(&mut event);
        let claimed = event.claimed_caller.unwrap();
        assert_eq!(claimed.chars().count(), MAX_CALLER);
        assert!(claimed.starts_with("choria=x\\n2026-12-04T00:00:00Z allow up=admin \\u{1b}[32m"));
        assert!(claimed.ends_with('…'));
        assert!(!claimed.chars().any(char::is_control));
        assert_eq!(event.request_id.unwrap().chars().count(), MAX_REQUEST_ID);
        assert_eq!(event.collectives.len(), MAX_NAMES);
        assert!(
            event
                .collectives
                .iter()
                .all(|c| c.chars().count() == MAX_NAME)
        );
        assert_eq!(event.reason, "bad\\r\\nline");
    }

    #[test]
    fn clean_short_texts_are_kept_as_they_are() {
        let mut text = "choria=alice.mcollective".to_string();
        fit(&mut text, MAX_CALLER);
        assert_eq!(text, "choria=alice.mcollective");
        let mut exact = "é".repeat(10);
        fit(&mut exact, 10);
        assert_eq!(exact, "é".repeat(10));
        let mut long = "é".repeat(11);
        fit(&mut long, 10);
        assert_eq!(long, format!("{}…", "é".repeat(9)));
    }
}
