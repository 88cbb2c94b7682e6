//! File helpers for [`super`]: finding the binary, the config text, ports files, log tails.

use super::{
    FALLBACK_DIRS, LOG_TAIL_BYTES, LOG_TAIL_LINES, NATS_SERVER_ENV, NatsServer, NatsdError,
};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub(super) fn find_nats_server_in(
    override_path: Option<OsString>,
    path_var: Option<OsString>,
) -> Result<PathBuf, NatsdError> {
    if let Some(exe) = override_path.filter(|p| !p.is_empty()) {
        let exe = PathBuf::from(exe);
        if is_executable(&exe) {
            return Ok(exe);
        }
        return Err(NatsdError::NotInstalled {
            detail: format!(
                "{NATS_SERVER_ENV}={} is not an executable file",
                exe.display()
            ),
        });
    }
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(FALLBACK_DIRS.iter().map(PathBuf::from));
    dirs.iter()
        .map(|dir| dir.join("nats-server"))
        .find(|exe| is_executable(exe))
        .ok_or_else(|| NatsdError::NotInstalled {
            detail: format!(
                "searched PATH and {}; {NATS_SERVER_ENV} is unset",
                FALLBACK_DIRS.join(", ")
            ),
        })
}

pub(super) fn is_executable(path: &Path) -> bool {
    match fs::metadata(path) {
        #[cfg(unix)]
        Ok(meta) => {
            use std::os::unix::fs::PermissionsExt;
            meta.is_file() && meta.permissions().mode() & 0o111 != 0
        }
        #[cfg(not(unix))]
        Ok(meta) => meta.is_file(),
        Err(_) => false,
    }
}

/// A file-name-safe version of a server name.
pub(super) fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A double-quoted nats-server config string.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_path(path: &Path) -> Result<String, NatsdError> {
    path.to_str()
        .map(quote)
        .ok_or_else(|| NatsdError::InvalidConfig(format!("path is not UTF-8: {}", path.display())))
}

/// The config file text; `port` 0 means random (`port: -1`).
pub(super) fn render_config(server: &NatsServer, port: u16) -> Result<String, NatsdError> {
    let mut lines = vec![
        "# Written by fedgate::natsd; regenerated on every (re)start.".to_string(),
        "host: \"127.0.0.1\"".to_string(),
        if port == 0 {
            "port: -1".to_string()
        } else {
            format!("port: {port}")
        },
        format!("server_name: {}", quote(&server.name)),
        format!("ports_file_dir: {}", quote_path(&server.work_dir)?),
        format!("log_file: {}", quote_path(&server.log_path)?),
        format!("pid_file: {}", quote_path(&server.pid_path)?),
    ];
    if let Some(max) = server.config.max_payload {
        lines.push(format!("max_payload: {max}"));
    }
    if let Some(tls) = &server.config.tls {
        lines.push("tls {".to_string());
        lines.push(format!("  cert_file: {}", quote_path(&tls.cert)?));
        lines.push(format!("  key_file: {}", quote_path(&tls.key)?));
        lines.push(format!("  ca_file: {}", quote_path(&tls.ca)?));
        if tls.verify_clients {
            lines.push("  verify: true".to_string());
        }
        lines.push("  timeout: 5".to_string());
        lines.push("}".to_string());
    }
    if server.config.leafnode_listen || !server.config.leafnode_remotes.is_empty() {
        lines.push("leafnodes {".to_string());
        if server.config.leafnode_listen {
            lines.push("  listen: \"127.0.0.1:-1\"".to_string());
        }
        if !server.config.leafnode_remotes.is_empty() {
            let urls: Vec<String> = server
                .config
                .leafnode_remotes
                .iter()
                .map(|u| quote(u))
                .collect();
            lines.push(format!("  remotes: [ {{ urls: [{}] }} ]", urls.join(", ")));
        }
        lines.push("}".to_string());
    }
    if server.config.websocket_listen {
        lines.push("websocket { listen: \"127.0.0.1:-1\", no_tls: true }".to_string());
    }
    if server.config.jetstream {
        lines.push(format!(
            "jetstream {{ store_dir: {} }}",
            quote_path(&server.store_dir)?
        ));
    }
    if !server.config.extra_config.is_empty() {
        lines.push(server.config.extra_config.clone());
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text)
}

pub(super) fn find_ports_file(dir: &Path, suffix: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
}

/// The client port from a ports file such as `{"nats":["nats://127.0.0.1:34567"]}`.
pub(super) fn read_ports_file(path: &Path) -> Result<u16, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    parse_ports(&text)
}

pub(super) fn parse_ports(text: &str) -> Result<u16, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let urls = value
        .get("nats")
        .and_then(|v| v.as_array())
        .ok_or("no \"nats\" list")?;
    urls.iter()
        .filter_map(|u| u.as_str())
        .filter_map(|u| u.rsplit_once(':'))
        .find_map(|(_, port)| port.parse::<u16>().ok().filter(|p| *p != 0))
        .ok_or_else(|| format!("no client port in {text:?}"))
}

/// The last [`LOG_TAIL_LINES`] lines of a log file.
pub(super) fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read log {}: {e})", path.display()),
    }
}
