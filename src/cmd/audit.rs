//! `fedgate audit`: verify the hash chain, query records, follow the live trail.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fedgate::audit::bound::escaped;
use fedgate::audit::{Kind, Record, Verdict, review};
use regex::Regex;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Audit commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the hash chain of audit files (in any order, rotated files included); exits 0 when
    /// intact, 1 with the first bad line when not.
    Verify(VerifyArgs),
    /// Print matching records as a table (or JSON lines), across rotated files.
    Query(QueryArgs),
    /// Follow the active audit file and print new records as they are written.
    Tail(TailArgs),
    /// Copy the JetStream audit stream of a config into one file per instance chain, then
    /// verify each; exits 1 when any chain is broken. The files work with `verify` and `query`.
    Export(ExportArgs),
    /// Write a new Ed25519 checkpoint key (PKCS#8 PEM, mode 0600) for `[audit.checkpoint] key`,
    /// and its public half beside it as `<out>.pub`, for `verify --key`.
    Keygen {
        /// Where to write the private key; refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Arguments of `fedgate audit export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The fedgate config whose `[audit.jetstream]` names the stream.
    #[arg(long, env = "FEDGATE_CONFIG")]
    config: PathBuf,
    /// Directory for the files (`<subject>.log`), created if missing.
    #[arg(long)]
    out: PathBuf,
}

/// Most instance chains one export writes.
const MAX_EXPORT_CHAINS: usize = 10_000;

/// Arguments of `fedgate audit verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Audit files; a single active file brings its rotated files along.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Accept a chain that starts at this seq instead of its genesis (a known cut); without it,
    /// a chain whose beginning is missing is broken.
    #[arg(long, value_name = "SEQ")]
    from: Option<u64>,
    /// Public checkpoint keys (`<key>.pub` from `fedgate audit keygen`; repeatable): every
    /// checkpoint must be signed by one of them and match the chain, and no more records may
    /// follow one than it promised.
    #[arg(long = "key", value_name = "PUB")]
    keys: Vec<PathBuf>,
}

/// Arguments of `fedgate audit query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The active audit file (its rotated files are read too), or several files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Verified, mapped or claimed (unverified) caller id matches this regex.
    #[arg(long, value_name = "RE")]
    caller: Option<String>,
    /// Agent.
    #[arg(long)]
    agent: Option<String>,
    /// Action.
    #[arg(long)]
    action: Option<String>,
    /// allow or deny.
    #[arg(long, value_parser = ["allow", "deny"])]
    decision: Option<String>,
    /// Records at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Records before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Print the matching records as JSON lines (same as `--format json`).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// `table` (default), `json` (one record per line) or `cef` (ArcSight Common Event Format,
    /// one line per record, for SIEMs).
    #[arg(long, value_parser = ["table", "json", "cef"])]
    format: Option<String>,
}

/// Arguments of `fedgate audit tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The active audit file.
    file: PathBuf,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs an audit command.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Verify(args) => verify(args),
        Command::Query(args) => query(args),
        Command::Tail(args) => tail(args).await,
        Command::Export(args) => export(args).await,
        Command::Keygen { out } => keygen(&out),
    }
}

fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (private, public) = fedgate::audit::checkpoint::generate().map_err(anyhow::Error::msg)?;
    let mut public_path = out.as_os_str().to_owned();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    for (path, text, mode) in [
        (out, &private, 0o600),
        (public_path.as_path(), &public, 0o644),
    ] {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    use std::collections::BTreeMap;
    use std::io::Write;

    let config = fedgate::config::Config::load(&args.config)?;
    let Some(js) = config.audit.as_ref().and_then(|a| a.jetstream.as_ref()) else {
        anyhow::bail!("{}: no [audit.jetstream] section", args.config.display());
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut files: BTreeMap<String, (PathBuf, std::io::BufWriter<std::fs::File>)> = BTreeMap::new();
    let out = args.out.clone();
    let count = fedgate::audit::jetstream::read_all(&js.endpoint(), &js.stream, |subject, line| {
        if !files.contains_key(subject) {
            if files.len() == MAX_EXPORT_CHAINS {
                return Err(format!("more than {MAX_EXPORT_CHAINS} instance subjects"));
            }
            let path = out.join(format!("{subject}.log"));
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            files.insert(subject.to_string(), (path, std::io::BufWriter::new(file)));
        }
        let (path, writer) = files.get_mut(subject).expect("inserted above");
        writer
            .write_all(line)
            .and_then(|()| writer.write_all(b"\n"))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    })
    .await
    .map_err(anyhow::Error::msg)?;
    println!("{count} records from stream {}", js.stream);
    let mut broken = false;
    for (subject, (path, mut writer)) in files {
        writer
            .flush()
            .with_context(|| format!("writing {}", path.display()))?;
        match review::verify(std::slice::from_ref(&path)) {
            Ok(intact) => println!(
                "{subject}: intact, {} records, seq {}..{} -> {}",
                intact.records,
                intact.start.seq,
                intact.end.seq.saturating_sub(1),
                path.display()
            ),
            Err(err) => {
                broken = true;
                println!("{subject}: broken: {err}");
            }
        }
    }
    Ok(if broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Each active file given brings its rotated predecessors (a file given twice counts once).
fn expand(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut expanded: Vec<PathBuf> = Vec::new();
    for file in files {
        let trail = review::trail(file);
        let trail = if trail.is_empty() {
            vec![file.clone()]
        } else {
            trail
        };
        for path in trail {
            if !expanded.contains(&path) {
                expanded.push(path);
            }
        }
    }
    expanded
}

/// Verifies each chain among the files given (one per instance) on its own.
fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let files = expand(&args.files);
    let chains = review::chains(&files);
    let several = chains.len() > 1;
    let keys = (!args.keys.is_empty())
        .then(|| fedgate::audit::checkpoint::Keys::load(&args.keys))
        .transpose()?;
    let anchoring = match &keys {
        Some(keys) => review::Anchoring::Keys { keys, strict: true },
        None => review::Anchoring::None,
    };
    let mut broken = false;
    let mut reports = Vec::new();
    for (instance, files) in &chains {
        let result = review::verify_with(files, args.from, anchoring);
        broken |= result.is_err();
        let json = match &result {
            Ok(intact) => {
                let mut json = serde_json::json!({"instance": instance, "intact": true, "records": intact.records, "files": intact.files, "first_seq": intact.start.seq, "last_hash": intact.end.prev});
                if let Some(anchors) = &intact.anchors {
                    json["checkpoints"] = anchors.checkpoints.into();
                    json["anchored_to"] = anchors.anchored_to.into();
                    json["unanchored"] = anchors.unanchored.into();
                }
                json
            }
            Err(broken) => {
                serde_json::json!({"instance": instance, "intact": false, "file": broken.file, "line": broken.line, "problem": broken.problem})
            }
        };
        if args.json {
            reports.push(json);
            continue;
        }
        let name = if several {
            format!("{instance}: ")
        } else {
            String::new()
        };
        match result {
            Ok(intact) => {
                println!(
                    "{name}intact: {} records in {} file(s), seq {}..{}, last hash {}",
                    intact.records,
                    intact.files.len(),
                    intact.start.seq,
                    intact.end.seq.saturating_sub(1),
                    intact.end.prev
                );
                if let Some(anchors) = &intact.anchors {
                    println!(
                        "{name}anchored: {} signed checkpoint(s), the last at seq {}; unanchored tail: {} record(s)",
                        anchors.checkpoints,
                        anchors.anchored_to.map_or("-".into(), |s| s.to_string()),
                        anchors.unanchored
                    );
                }
            }
            Err(broken) => {
                println!("{name}broken: {broken}");
                println!("{name}first bad line: {}", broken.line);
            }
        }
    }
    if args.json {
        match reports.as_slice() {
            [one] => println!("{one}"),
            all => println!("{}", serde_json::json!({ "chains": all })),
        }
    }
    Ok(if broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn parse_time(flag: &str, text: &Option<String>) -> anyhow::Result<Option<OffsetDateTime>> {
    text.as_deref()
        .map(|t| {
            OffsetDateTime::parse(t, &Rfc3339)
                .with_context(|| format!("--{flag} {t}: not an RFC 3339 time"))
        })
        .transpose()
}

fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let caller = args
        .caller
        .as_deref()
        .map(Regex::new)
        .transpose()
        .context("--caller")?;
    let since = parse_time("since", &args.since)?;
    let until = parse_time("until", &args.until)?;
    let decision = args.decision.as_deref().map(|d| {
        if d == "allow" {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    });
    let all: Vec<Record> = review::records(&expand(&args.files))
        .map(|(_, _, r)| r)
        .collect();
    let replies: std::collections::HashMap<&str, u64> = all
        .iter()
        .filter(|r| r.kind == Kind::Completion)
        .flat_map(|r| {
            r.event
                .links
                .iter()
                .map(move |l| (l.as_str(), r.event.replies.unwrap_or(0)))
        })
        .collect();
    let matches = |r: &&Record| {
        let when = OffsetDateTime::parse(&r.time, &Rfc3339).ok();
        r.kind == Kind::Decision
            && caller.as_ref().is_none_or(|re| {
                [
                    &r.event.caller,
                    &r.event.mapped_caller,
                    &r.event.claimed_caller,
                ]
                .iter()
                .any(|c| c.as_deref().is_some_and(|c| re.is_match(c)))
            })
            && args
                .agent
                .as_ref()
                .is_none_or(|a| r.event.agent.as_ref() == Some(a))
            && args
                .action
                .as_ref()
                .is_none_or(|a| r.event.action.as_ref() == Some(a))
            && decision.is_none_or(|d| r.event.decision == Some(d))
            && since.is_none_or(|s| when.is_some_and(|w| w >= s))
            && until.is_none_or(|u| when.is_some_and(|w| w < u))
    };
    let selected: Vec<&Record> = all.iter().filter(matches).collect();
    let format = match args.format.as_deref() {
        Some(format) => format,
        None if args.json => "json",
        None => "table",
    };
    if format == "json" {
        for record in selected {
            println!("{}", serde_json::to_string(record)?);
        }
    } else if format == "cef" {
        for record in selected {
            println!("{}", fedgate::audit::cef::line(record));
        }
    } else {
        println!("{}", header());
        for record in selected {
            println!("{}", row(record, replies.get(record.id.as_str()).copied()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn header() -> String {
    format!(
        "{:<26} {:<6} {:<30} {:<30} {:<12} {:<22} {:>7}  {:<24} REASON",
        "TIME", "DEC", "CALLER", "AS", "COLLECTIVE", "AGENT.ACTION", "REPLIES", "RULE"
    )
}

/// One record as one table row. Every field is shown with its control characters escaped, so a
/// value a caller chose (a claimed caller id with a line break, a terminal escape) cannot forge
/// a row, whatever wrote the trail.
fn row(record: &Record, replies: Option<u64>) -> String {
    let e = &record.event;
    let shown = |text: &str| escaped(text).into_owned();
    let caller = e
        .caller
        .clone()
        .or_else(|| e.claimed_caller.as_ref().map(|c| format!("{c} (claimed)")))
        .unwrap_or_else(|| "-".into());
    let decision = match e.decision {
        Some(Verdict::Allow) => "allow",
        Some(Verdict::Deny) => "deny",
        None => "-",
    };
    format!(
        "{:<26} {:<6} {:<30} {:<30} {:<12} {:<22} {:>7}  {:<24} {}",
        shown(&record.time),
        decision,
        shown(&caller),
        shown(e.mapped_caller.as_deref().unwrap_or("-")),
        shown(&e.collectives.join(",")),
        shown(&format!(
            "{}.{}",
            e.agent.as_deref().unwrap_or("?"),
            e.action.as_deref().unwrap_or("?")
        )),
        replies.map_or("-".into(), |n| n.to_string()),
        shown(e.rule.as_deref().unwrap_or("-")),
        shown(&e.reason)
    )
}

async fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let mut position = 0u64;
    let mut identity = file_identity(&args.file);
    if !args.json {
        println!("{}", header());
    }
    loop {
        let current = file_identity(&args.file);
        if current != identity {
            // Rotated: start the new active file from its beginning.
            identity = current;
            position = 0;
        }
        if let Some(fresh) = read_from(&args.file, &mut position) {
            let whole = fresh.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            for line in fresh[..whole]
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
            {
                if args.json {
                    println!("{}", String::from_utf8_lossy(line));
                } else if let Ok(record) = serde_json::from_slice::<Record>(line)
                    && !matches!(record.kind, Kind::Header | Kind::Checkpoint)
                {
                    println!("{}", row(&record, record.event.replies));
                }
            }
            position += whole as u64;
        }
        tokio::select! {
            _ = fedgate::cli::shutdown_signal() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The bytes of `path` after `position` (from the start if the file shrank below it).
fn read_from(path: &Path, position: &mut u64) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() < *position {
        *position = 0;
    }
    file.seek(SeekFrom::Start(*position)).ok()?;
    let mut fresh = Vec::new();
    file.read_to_end(&mut fresh).ok()?;
    Some(fresh)
}

fn file_identity(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedgate::audit::Event;

    #[test]
    fn a_row_shows_control_characters_escaped_whatever_wrote_the_trail() {
        // As a trail written before claimed texts were bounded may hold it.
        let record = Record {
            v: 1,
            kind: Kind::Decision,
            id: "i:1".into(),
            seq: 1,
            time: "2026-12-04T10:00:00.000000Z".into(),
            instance: "i".into(),
            event: Event {
                claimed_caller: Some(
                    "choria=x\n2026-12-04T00:00:00Z allow \u{1b}[32mup=admin".into(),
                ),
                decision: Some(Verdict::Deny),
                reason: "bad\rline".into(),
                ..Event::default()
            },
            prev: String::new(),
            hash: String::new(),
        };
        let row = row(&record, None);
        assert!(!row.chars().any(char::is_control), "{row:?}");
        assert!(
            row.contains("choria=x\\n2026-12-04T00:00:00Z allow \\u{1b}[32mup=admin (claimed)")
        );
        assert!(row.ends_with("bad\\rline"));
    }
}
