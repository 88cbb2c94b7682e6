//! `fedgate token`: the edge's signing key, tokens, and password hashes for the users file.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use fedgate::edge::auth::{self, TokenKeys};

/// Token commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a new Ed25519 signing key (PKCS#8 PEM, mode 0600) for `[edge] token_key`.
    Keygen {
        /// Where to write it; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a token for a user; prints the token (and nothing else) on stdout.
    Issue {
        /// The fedgate config whose `[edge] token_key` signs the token.
        #[arg(long, env = "FEDGATE_CONFIG")]
        config: PathBuf,
        /// The user; requests are made as `up=<user>` before identity mapping.
        #[arg(long)]
        user: String,
        /// Lifetime: `30m`, `1h`, `2d` or seconds.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Collectives the token may reach (repeatable); none means any policy allows.
        #[arg(long = "collective")]
        collectives: Vec<String>,
    },
    /// Hash a password read from stdin with argon2id, for the users file.
    HashPassword,
}

/// Runs a token command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Keygen { out } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let pem = TokenKeys::generate_pem()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            file.write_all(pem.as_bytes())?;
            eprintln!("wrote {}", out.display());
        }
        Command::Issue {
            config,
            user,
            ttl,
            collectives,
        } => {
            let config = fedgate::config::Config::load(&config)?;
            let key = config
                .edge
                .as_ref()
                .and_then(|e| e.token_key.as_ref())
                .context("the config has no [edge] token_key")?;
            let keys = TokenKeys::load(key)?;
            let ttl = parse_ttl(&ttl)?;
            let collectives = (!collectives.is_empty()).then_some(collectives);
            println!(
                "{}",
                keys.issue(&user, ttl, collectives, SystemTime::now())?
            );
        }
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on stdin");
            println!("{}", auth::hash_password(password)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `90`, `30m`, `1h`, `2d`.
fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("--ttl {text}: expected e.g. 30m, 1h, 2d"))?;
    let seconds = match unit {
        's' => n,
        'm' => n * 60,
        'h' => n * 3600,
        'd' => n * 86_400,
        _ => anyhow::bail!("--ttl {text}: unit must be s, m, h or d"),
    };
    anyhow::ensure!(
        (60..=30 * 86_400).contains(&seconds),
        "--ttl {text}: between 1 minute and 30 days"
    );
    Ok(Duration::from_secs(seconds))
}
