//! What `fedgate-dev demo` prints once everything is up: the page, the users, and command lines.

use std::path::Path;

use fedgate::legacy::site::LegacySite;

use super::config::Files;
use super::{INSTANCES, LEGACY, LEGACY_NODES, OSAKA, USERS};

/// Prints the page's URL, the users with their passwords and tokens, and command lines to try.
pub(super) fn print_welcome(
    state: &serde_json::Value,
    tokens: &[(&str, String)],
    (client_config, federation_config): (&Path, &Path),
    files: &Files,
    legacy: Option<&LegacySite>,
) {
    let exe = fedgate_dev::gateway_exe().display().to_string();
    let url = state["url"].as_str().unwrap_or_default();
    let page = if files.page {
        format!("Open {url} and log in as alice (operator) or bob (read-only).")
    } else {
        "This fedgate holds no web console (scripts/setup-deps builds the page; then rebuild)."
            .to_string()
    };
    let mut out = format!(
        "\nfedgate demo is running: {} nodes in london, {} in tokyo and {} in {OSAKA} (Choria \
         protocol v2, its own token issuer), federation prod served by {} and {}\n\n{page}\n",
        state["collectives"]["london"],
        state["collectives"]["tokyo"],
        state["collectives"][OSAKA],
        INSTANCES[0],
        INSTANCES[1],
    );
    for ((user, password), (_, token)) in USERS.iter().zip(tokens) {
        out.push_str(&format!(
            "\n  {user}: password {password}\n  token: {token}\n"
        ));
    }
    out.push_str(&edge_lines(&exe, state, tokens));
    out.push_str(&format!(
        "\nStraight to london's NATS, as alice of london:\n  {exe} rpc --config {} --collective london rpcutil ping --fact country=uk\n\
         \nThrough the Federation Broker, as alice of prod (a v1 client; fedgate re-signs for {OSAKA} as v2 and translates the replies back):\n  \
         {exe} rpc --config {} --federation prod --collective {OSAKA} rpcutil ping\n\
         \nInstances: {exe} observe --config {} --federation prod\n",
        client_config.display(),
        federation_config.display(),
        client_config.with_file_name(format!("{}.toml", INSTANCES[0])).display(),
    ));
    match legacy {
        Some(site) => out.push_str(&format!(
            "\nThe legacy site {LEGACY} ({}; {} serializer: --legacy-serializer picks marshal or yaml), from the real mco as cert=alice, reaches the federation's nodes:\n  \
             RUBYOPT=-r{} mco ping --config {}\n\
             and Choria clients on london reach its mcollectived nodes as collective {LEGACY}:\n  \
             {exe} rpc --config {} --collective {LEGACY} rpcutil ping\n",
            LEGACY_NODES.map(|(n, _)| n).join(", "),
            site.serializer,
            site.key("psych_compat.rb").display(),
            site.key("client.cfg").display(),
            client_config.display(),
        )),
        None => out.push_str("\nNo legacy site in this run.\n"),
    }
    out.push_str("\nPress Ctrl-C to stop.");
    println!("{out}");
}

/// `ws-rpc` lines for the edge: with a token, with alice's edge certificate (mTLS), and with a
/// request alice signs herself; each trusts the edge CA.
fn edge_lines(exe: &str, state: &serde_json::Value, tokens: &[(&str, String)]) -> String {
    let ws = state["ws"][0].as_str().unwrap_or_default();
    let edge = &state["edge"];
    let text = |key: &str| edge[key].as_str().unwrap_or_default().to_string();
    let (ca, cert, key) = (text("ca"), text("cert"), text("key"));
    let user = text("user");
    // The user's own token, so the line runs as printed.
    let token = tokens
        .iter()
        .find(|(name, _)| *name == user)
        .map_or_else(|| format!("<{user}'s token>"), |(_, token)| token.clone());
    format!(
        "\nFrom a script, through the edge (TLS with the edge CA):\n  \
         {exe} ws-rpc --url {ws} --ca {ca} --token {token} --federation prod rpcutil ping\n  \
         {exe} ws-rpc --url {ws} --ca {ca} --token {token} --collective {OSAKA} rpcutil ping\n\
         \nWith {user}'s edge certificate (mTLS), and with a request {user} signs herself:\n  \
         {exe} ws-rpc --url {ws} --ca {ca} --cert {cert} --key {key} --federation prod rpcutil ping\n  \
         {exe} ws-rpc --url {ws} --ca {ca} --cert {cert} --key {key} --sign --collective london rpcutil ping\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ws_rpc_line_carries_the_users_own_token() {
        let state = serde_json::json!({
            "ws": ["wss://127.0.0.1:8480/ws"],
            "edge": {"ca": "ca.pem", "cert": "alice.pem", "key": "alice.key", "user": "alice"},
        });
        let tokens = [
            ("alice", "alice-token".to_string()),
            ("bob", "bob-token".to_string()),
        ];
        let lines = edge_lines("fedgate", &state, &tokens);
        assert!(
            lines.contains("--token alice-token --federation prod rpcutil ping"),
            "{lines}"
        );
        assert!(!lines.contains('<'), "{lines}");
    }
}
