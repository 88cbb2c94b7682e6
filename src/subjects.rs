//! Choria NATS subjects: broadcast, directed and reply, as go-choria names them.

use md5::{Digest, Md5};

/// `<collective>.broadcast.agent.<agent>`: every node with the agent receives it.
pub fn broadcast(collective: &str, agent: &str) -> String {
    format!("{collective}.broadcast.agent.{agent}")
}

/// `<collective>.node.<identity>`: one node receives it.
pub fn node(collective: &str, identity: &str) -> String {
    format!("{collective}.node.{identity}")
}

/// `<collective>.reply.<md5hex(callerid)>.<requestid>`: the Go client's reply subject.
pub fn reply(collective: &str, callerid: &str, requestid: &str) -> String {
    format!("{collective}.reply.{}.{requestid}", md5_hex(callerid))
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `choria.federation.<cluster>.federation`: where clients send federated requests.
pub fn federation_ingest(cluster: &str) -> String {
    format!("choria.federation.{cluster}.federation")
}

/// `choria.federation.<cluster>.collective`: where member nodes send federated replies.
pub fn federation_collective(cluster: &str) -> String {
    format!("choria.federation.{cluster}.collective")
}

/// `choria.federation.<cluster>.stats`: where broker instances publish their figures.
pub fn federation_stats(cluster: &str) -> String {
    format!("choria.federation.{cluster}.stats")
}

/// `choria.federation.<cluster>.reply.<reply_to>`: a reply subject, in a member federation's
/// network, that carries the original reply subject back to this cluster without any state.
pub fn federation_reply(cluster: &str, reply_to: &str) -> String {
    format!("{}{reply_to}", federation_reply_prefix(cluster))
}

/// The prefix of [`federation_reply`] subjects.
pub fn federation_reply_prefix(cluster: &str) -> String {
    format!("choria.federation.{cluster}.reply.")
}

/// Longest reply subject accepted; chained federations nest reply subjects, so this bounds the chain.
pub const MAX_REPLY_SUBJECT: usize = 1024;

/// A federated request target: the only subjects a federation broker may publish requests to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `<collective>.broadcast.agent.<agent>`
    Broadcast {
        /// Member collective.
        collective: &'a str,
        /// Agent name.
        agent: &'a str,
    },
    /// `<collective>.node.<identity>`
    Node {
        /// Member collective.
        collective: &'a str,
        /// Node identity.
        identity: &'a str,
    },
}

impl<'a> Target<'a> {
    /// Parses a target subject; `None` for anything but a broadcast-agent or node subject.
    pub fn parse(subject: &'a str) -> Option<Self> {
        if !is_valid_dotted(subject) {
            return None;
        }
        let (collective, rest) = subject.split_once('.')?;
        if let Some(agent) = rest.strip_prefix("broadcast.agent.") {
            return is_valid_token(agent).then_some(Target::Broadcast { collective, agent });
        }
        let identity = rest.strip_prefix("node.")?;
        Some(Target::Node {
            collective,
            identity,
        })
    }

    /// The collective the target is in.
    pub fn collective(&self) -> &'a str {
        match self {
            Target::Broadcast { collective, .. } | Target::Node { collective, .. } => collective,
        }
    }
}

/// True for subjects replies may be sent to: Choria's `<collective>.reply.<hash>.<id>[.<seq>]`,
/// with a plain collective name first (never `$SYS`, `$JS`, `$KV` or `_INBOX` subjects), or
/// [`federation_reply`] wrapping such a subject. Request and federation subjects never qualify.
pub fn is_reply_subject(subject: &str) -> bool {
    if subject.len() > MAX_REPLY_SUBJECT || !is_valid_dotted(subject) {
        return false;
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens.len() > 4 && tokens[..2] == ["choria", "federation"] && tokens[3] == "reply" {
        return is_valid_name(tokens[2]) && is_reply_subject(&tokens[4..].join("."));
    }
    tokens.len() >= 4 && tokens[1] == "reply" && is_valid_name(tokens[0]) && tokens[0] != "choria"
}

/// True for names of collectives, federations and clusters: letters, digits, `_` and `-`, not
/// starting with `_` or `-`, so never a NATS system or inbox prefix.
pub fn is_valid_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// True when `token` can stand as one subject token: non-empty, no `.`, wildcard or whitespace.
pub fn is_valid_token(token: &str) -> bool {
    !token.is_empty()
        && !token
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
}

/// True when `name` can stand inside subjects as a dotted name (an identity such as `node1.example.net`).
pub fn is_valid_dotted(name: &str) -> bool {
    name.split('.').all(is_valid_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subject_matches_the_vector() {
        assert_eq!(
            reply(
                "mcollective",
                "choria=rip.mcollective",
                "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b"
            ),
            "mcollective.reply.37bdf08389145a56c13096c178802d3b.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b"
        );
        assert_eq!(
            reply("mcollective", "up=bob", "0b9a8c7d6e5f40312233445566778899"),
            "mcollective.reply.72dc525f8fe0064c0372c1fb3d729560.0b9a8c7d6e5f40312233445566778899"
        );
    }

    #[test]
    fn targets_are_broadcast_agent_or_node_subjects() {
        assert_eq!(
            Target::parse("london.broadcast.agent.rpcutil"),
            Some(Target::Broadcast {
                collective: "london",
                agent: "rpcutil"
            })
        );
        assert_eq!(
            Target::parse("london.node.web1.example.net"),
            Some(Target::Node {
                collective: "london",
                identity: "web1.example.net"
            })
        );
        for bad in [
            "london.broadcast.service.aaa_signer",
            "london.broadcast.agent.rpc.util",
            "london.reply.abc.def",
            "choria.federation.prod.federation",
            "london.node.",
            "london.node.>",
            "london.broadcast.agent.*",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn reply_space_excludes_request_and_federation_subjects() {
        for good in [
            "mcollective.reply.37bdf08389145a56c13096c178802d3b.6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b",
            "london.reply.abc.123.4",
            "choria.federation.prod.reply.london.reply.abc.def",
        ] {
            assert!(is_reply_subject(good), "{good}");
        }
        for bad in [
            "$KV.bucket.reply.key",
            "$JS.API.CONSUMER.DELETE.reply.c",
            "$SYS.reply.x.y",
            "_INBOX.reply.x.y",
            "orders.create.reply.x",
            "x.y.reply.z",
            "choria.federation.prod.reply.$KV.b.reply.k",
            "choria.reply.a.b",
            "london.reply.x",
            "london.broadcast.agent.rpcutil",
            "london.node.reply.x",
            "choria.federation.prod.federation",
            "choria.federation.prod.collective",
            "choria.federation.prod.reply.london.broadcast.agent.rpcutil",
            "london.reply",
            "london.reply.>",
            "_INBOX.abc",
            "x.reply.",
        ] {
            assert!(!is_reply_subject(bad), "{bad}");
        }
        assert!(!is_reply_subject(&format!(
            "a.reply.{}",
            "b".repeat(MAX_REPLY_SUBJECT)
        )));
    }

    #[test]
    fn tokens_reject_wildcards_and_dots() {
        assert!(is_valid_token("rpcutil"));
        for bad in ["", "a.b", "*", ">", "a b"] {
            assert!(!is_valid_token(bad), "{bad:?}");
        }
        assert!(is_valid_dotted("node1.example.net"));
        assert!(!is_valid_dotted("node1..net"));
        assert!(!is_valid_dotted("node.>"));
    }
}
