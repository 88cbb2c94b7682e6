//! `fedgate certs expiry`: when each certificate a config names expires, soonest first: the
//! figures the `fedgate_certificate_expiry_timestamp_seconds` gauge publishes, for a check
//! before a rotation or a cron job. (The development PKI is `fedgate-dev certs dev`.)

use std::path::PathBuf;
use std::process::ExitCode;

use fedgate::config::Config;
use fedgate::metrics::certs::{configured, expiries};
use serde::Serialize;

/// Certificate commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List every certificate the config names (CAs, TLS identities, privileged signers) with
    /// its config key, subject and expiry, soonest first; exits 1 when one expires within
    /// `--within` days or cannot be read, 78 when the config does not load.
    Expiry(ExpiryArgs),
}

/// Arguments of `fedgate certs expiry`.
#[derive(Debug, clap::Args)]
pub struct ExpiryArgs {
    /// The config file.
    #[arg(long, env = "FEDGATE_CONFIG")]
    config: PathBuf,
    /// How many days ahead count as expiring soon.
    #[arg(long, default_value_t = 30)]
    within: u32,
    /// One JSON object a line instead of a table.
    #[arg(long)]
    json: bool,
}

/// One certificate, or one file that could not be read.
#[derive(Debug, Serialize)]
struct Line {
    entry: String,
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    days_left: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs a certificate command.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Expiry(args) = command;
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("fedgate certs expiry: {err}");
            return Ok(ExitCode::from(super::EX_CONFIG));
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut lines = Vec::new();
    for file in configured(&config) {
        let path = file.path.display().to_string();
        match expiries(&file) {
            Ok(certs) => lines.extend(certs.into_iter().map(|(subject, expires)| Line {
                entry: file.entry.clone(),
                file: path.clone(),
                subject: Some(subject),
                expires: Some(expires),
                days_left: Some((expires - now).div_euclid(86_400)),
                error: None,
            })),
            Err(error) => lines.push(Line {
                entry: file.entry.clone(),
                file: path,
                subject: None,
                expires: None,
                days_left: None,
                error: Some(error),
            }),
        }
    }
    // Unreadable first, then soonest to expire.
    lines.sort_by_key(|line| (line.expires.is_some(), line.expires));
    let soon = |line: &Line| line.days_left.is_none_or(|d| d < i64::from(args.within));
    if args.json {
        for line in &lines {
            println!("{}", serde_json::to_string(line)?);
        }
    } else {
        println!("{}", table(&lines));
    }
    let failing = lines.iter().filter(|l| soon(l)).count();
    if failing > 0 {
        eprintln!(
            "fedgate certs expiry: {failing} certificate(s) expire within {} days or cannot be read",
            args.within
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Expiry (UTC), days left, config key and subject, one certificate a row.
fn table(lines: &[Line]) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    let rows: Vec<[String; 4]> = lines
        .iter()
        .map(|line| {
            let expires = line
                .expires
                .and_then(|at| time::OffsetDateTime::from_unix_timestamp(at).ok())
                .and_then(|at| at.format(&format).ok())
                .unwrap_or_else(|| "unreadable".into());
            let days = line.days_left.map_or_else(|| "-".into(), |d| d.to_string());
            let what = match (&line.subject, &line.error) {
                (Some(subject), _) => subject.escape_debug().to_string(),
                (None, Some(error)) => format!("{}: {}", line.file, error.escape_debug()),
                (None, None) => line.file.clone(),
            };
            [expires, days, line.entry.clone(), what]
        })
        .collect();
    let header = ["EXPIRES (UTC)", "DAYS", "CONFIG KEY", "SUBJECT"].map(String::from);
    let widths: Vec<usize> = (0..3)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    std::iter::once(&header)
        .chain(&rows)
        .map(|r| {
            format!(
                "{:<w0$}  {:>w1$}  {:<w2$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
