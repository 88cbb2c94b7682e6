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
