//! The web page's HTTP API beside the WebSocket: agent DDLs for its forms, the audit trail for
//! auditors, and each Federation Broker instance's figures, as `fedgate observe` shows them.
//!
//! The routes (`/api/...`, in the server's `routes`) need the same credentials as the WebSocket
//! (a bearer token or a client certificate). Everything here is read-only and bounded: DDL files are loaded once at start,
//! an audit answer holds at most [`MAX_AUDIT_RECORDS`] records, and at most 1,024 instances are
//! remembered per cluster.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::audit::review;
use crate::audit::{Kind, Record, Verdict};
use crate::config::Config;
use crate::federation::observe::{Latest, shares};
use crate::federation::stats::ClusterSnapshot;
use crate::security::CallerId;

/// Most records one `/api/audit` answer holds.
pub const MAX_AUDIT_RECORDS: usize = 500;
/// Largest DDL file read.
const MAX_DDL_BYTES: u64 = 256 * 1024;
/// Most DDL files loaded.
const MAX_DDLS: usize = 256;

/// What the API serves.
pub(super) struct Api {
    ddls: BTreeMap<String, Value>,
    auditors: BTreeSet<String>,
    audit_file: Option<PathBuf>,
    /// The chain status, and the size and time of the trail it was computed for.
    chain: Mutex<Option<(TrailStamp, Value)>>,
    /// Per cluster, its instances' latest figures.
    clusters: Arc<Mutex<BTreeMap<String, Latest>>>,
}

/// Filters of `/api/audit`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Records whose caller (verified or claimed) or mapped caller is this.
    caller: Option<String>,
    agent: Option<String>,
    /// `allow` or `deny`.
    decision: Option<String>,
    /// Only records after this sequence number.
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TrailStamp {
    bytes: u64,
    modified: Option<std::time::SystemTime>,
}

impl Api {
    /// Loads the DDLs and starts following the stats of every federation in `config`.
    pub(super) async fn start(config: &Config, stop: CancellationToken) -> Result<Api, String> {
        let edge = config.edge.as_ref();
        let ddls = match edge.and_then(|e| e.ddl_dir.as_deref()) {
            Some(dir) => load_ddls(dir)?,
            None => BTreeMap::new(),
        };
        let clusters = Arc::new(Mutex::new(BTreeMap::new()));
        for (name, federation) in &config.federations {
            let cluster = federation.cluster_name(name).to_string();
            let endpoint = federation.endpoint();
            let clusters = clusters.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(err) = follow_stats(&endpoint, &cluster, clusters, stop).await {
                    tracing::warn!(%cluster, %err, "the instances view will not show this cluster");
                }
            });
        }
        Ok(Api {
            ddls,
            auditors: edge
                .map(|e| e.auditors.iter().cloned().collect())
                .unwrap_or_default(),
            audit_file: config.audit.as_ref().and_then(|a| a.file.clone()),
            chain: Mutex::new(None),
            clusters,
        })
    }

    /// Whether `caller` may read the audit trail.
    pub(super) fn is_auditor(&self, caller: &CallerId) -> bool {
        self.audit_file.is_some() && self.auditors.contains(caller.as_str())
    }

    /// Whether any federation's figures are followed.
    pub(super) fn has_instances(&self) -> bool {
        self.clusters.lock().is_ok_and(|c| !c.is_empty())
    }

    /// `{"agents":[...]}`.
    pub(super) fn agents(&self) -> Value {
        json!({ "agents": self.ddls.keys().collect::<Vec<_>>() })
    }

    /// One agent's DDL.
    pub(super) fn ddl(&self, agent: &str) -> Option<&Value> {
        self.ddls.get(agent)
    }

    /// Each cluster's instances with their figures and shares of the federation side's traffic.
    pub(super) fn instances(&self) -> Value {
        let clusters = match self.clusters.lock() {
            Ok(clusters) => clusters,
            Err(_) => return json!({ "clusters": [] }),
        };
        let list: Vec<Value> = clusters
            .iter()
            .map(|(cluster, latest)| {
                let aged = latest.aged();
                let federation = shares(&aged, |s| &s.federation);
                let collective = shares(&aged, |s| &s.collective);
                let instances: Vec<Value> = aged
                    .iter()
                    .map(|(name, (s, age))| {
                        let (received_share, sent_share) =
                            federation.get(name).copied().unwrap_or_default();
                        let (replies_share, _) = collective.get(name).copied().unwrap_or_default();
                        json!({
                            "instance": name,
                            "status": s.status,
                            "version": s.version,
                            "received": s.federation.received,
                            "sent": s.federation.sent,
                            "received_share": received_share,
                            "sent_share": sent_share,
                            "replies": s.collective.received,
                            "replies_share": replies_share,
                            "heard_s": age,
                        })
                    })
                    .collect();
                json!({ "cluster": cluster, "instances": instances })
            })
            .collect();
        json!({ "clusters": list })
    }

    /// The matching records and the chain's status: without `after`, the newest `limit`; with
    /// it, the oldest `limit` after it, so a poller that passes back `last` pages forward and
    /// misses nothing. Reads files: call it off the async workers.
    pub(super) fn audit(&self, query: &AuditQuery) -> Value {
        let Some(active) = &self.audit_file else {
            return json!({ "records": [], "chain": { "intact": false, "reason": "no audit file" } });
        };
        let files = review::trail(active);
        let limit = query.limit.unwrap_or(200).clamp(1, MAX_AUDIT_RECORDS);
        let mut kept: VecDeque<Value> = VecDeque::with_capacity(limit);
        let mut last = query.after.unwrap_or(0);
        for (_, _, record) in review::records(&files) {
            if query.after.is_some_and(|after| record.seq <= after) {
                continue;
            }
            if query.after.is_some() && kept.len() == limit {
                // Paging forward: the rest comes with the next call.
                break;
            }
            last = last.max(record.seq);
            if !matches(query, &record) {
                continue;
            }
            if kept.len() == limit {
                kept.pop_front();
            }
            kept.push_back(summary(&record));
        }
        json!({ "records": kept, "chain": self.chain_status(&files), "last": last })
    }

    /// The chain's status, recomputed only when the trail changed.
    fn chain_status(&self, files: &[PathBuf]) -> Value {
        let stamp = TrailStamp {
            bytes: files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum(),
            modified: files
                .last()
                .and_then(|f| std::fs::metadata(f).ok())
                .and_then(|m| m.modified().ok()),
        };
        if let Ok(cache) = self.chain.lock()
            && let Some((at, status)) = cache.as_ref()
            && *at == stamp
        {
            return status.clone();
        }
        let status = match review::verify(files) {
            Ok(intact) => json!({ "intact": true, "records": intact.records }),
            Err(broken) => json!({
                "intact": false,
                "broken_at": broken.line,
                "file": broken.file.file_name().map(|n| n.to_string_lossy().to_string()),
                "reason": broken.problem,
            }),
        };
        if let Ok(mut cache) = self.chain.lock() {
            *cache = Some((stamp, status.clone()));
        }
        status
    }
}

fn matches(query: &AuditQuery, record: &Record) -> bool {
    if matches!(record.kind, Kind::Header | Kind::Checkpoint) {
        return false;
    }
    let event = &record.event;
    let caller_ok = query.caller.as_deref().is_none_or(|c| {
        [&event.caller, &event.claimed_caller, &event.mapped_caller]
            .iter()
            .any(|x| x.as_deref() == Some(c))
    });
    let agent_ok = query
        .agent
        .as_deref()
        .is_none_or(|a| event.agent.as_deref() == Some(a));
    let decision_ok = match query.decision.as_deref() {
        None | Some("") => true,
        Some("allow") => event.decision == Some(Verdict::Allow),
        Some("deny") => event.decision == Some(Verdict::Deny),
        Some(_) => false,
    };
    caller_ok && agent_ok && decision_ok
}

fn summary(record: &Record) -> Value {
    let event = &record.event;
    json!({
        "line": record.seq,
        "time": record.time,
        "kind": record.kind,
        "instance": record.instance,
        "edge": event.edge,
        "realm": event.realm,
        "caller": event.caller.as_ref().or(event.claimed_caller.as_ref()),
        "verified": event.caller.is_some(),
        "mapped_caller": event.mapped_caller,
        "collectives": event.collectives,
        "agent": event.agent,
        "action": event.action,
        "decision": event.decision,
        "code": event.code,
        "rule": event.rule,
        "reason": event.reason,
        "request_id": event.request_id,
        "replies": event.replies,
    })
}

/// Reads `<agent>.json` Choria DDLs: each must be JSON whose `metadata.name` is its file name
/// and that lists `actions`.
fn load_ddls(dir: &Path) -> Result<BTreeMap<String, Value>, String> {
    let mut ddls = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if ddls.len() == MAX_DDLS {
            return Err(format!("{}: more than {MAX_DDLS} DDLs", dir.display()));
        }
        let problem = |p: String| format!("{}: {p}", path.display());
        let size = entry.metadata().map_err(|e| problem(e.to_string()))?.len();
        if size > MAX_DDL_BYTES {
            return Err(problem(format!("larger than {MAX_DDL_BYTES} bytes")));
        }
        let text = std::fs::read(&path).map_err(|e| problem(e.to_string()))?;
        let ddl: Value = serde_json::from_slice(&text).map_err(|e| problem(e.to_string()))?;
        if ddl["metadata"]["name"] != name || !ddl["actions"].is_array() {
            return Err(problem(format!(
                "not a Choria agent DDL for {name}: metadata.name must be {name:?}, with actions"
            )));
        }
        ddls.insert(name.to_string(), ddl);
    }
    Ok(ddls)
}

async fn follow_stats(
    endpoint: &crate::nats::NatsEndpoint,
    cluster: &str,
    clusters: Arc<Mutex<BTreeMap<String, Latest>>>,
    stop: CancellationToken,
) -> Result<(), String> {
    let client = crate::nats::connect(endpoint, "fedgate edge observer")
        .await
        .map_err(|e| e.to_string())?;
    let mut stats = client
        .subscribe(crate::subjects::federation_stats(cluster))
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(mut clusters) = clusters.lock() {
        clusters.entry(cluster.to_string()).or_default();
    }
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            message = stats.next() => message,
        };
        let Some(message) = message else {
            return Ok(());
        };
        let Ok(snapshot) = serde_json::from_slice::<ClusterSnapshot>(&message.payload) else {
            continue;
        };
        if let Ok(mut clusters) = clusters.lock() {
            clusters
                .entry(cluster.to_string())
                .or_default()
                .remember(snapshot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API over an audit file holding a decision by each of `callers`, in order.
    async fn api_with_trail(dir: &Path, callers: &[&str]) -> Api {
        use crate::audit::{Auditor, Event, FileOptions, FileSink, Fsync, Sink};
        let path = dir.join("audit.log");
        let sink = FileSink::open(FileOptions {
            path: path.clone(),
            rotate_bytes: 1 << 20,
            fsync: Fsync::Never,
            fsync_interval: std::time::Duration::from_millis(100),
            instance: "t1".into(),
            checkpoints: None,
            budget_bytes: None,
        })
        .unwrap();
        let auditor = Auditor::new("t1", vec![Sink::File(sink)], Vec::new());
        for caller in callers {
            let event = Event {
                caller: Some(caller.to_string()),
                agent: Some("rpcutil".into()),
                decision: Some(Verdict::Allow),
                ..Event::default()
            };
            auditor.record(Kind::Decision, event).await.unwrap();
        }
        Api {
            ddls: BTreeMap::new(),
            auditors: BTreeSet::from(["up=alice".to_string()]),
            audit_file: Some(path),
            chain: Mutex::new(None),
            clusters: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn lines(answer: &Value) -> Vec<u64> {
        answer["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["line"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn audit_answers_page_forward_without_missing_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let callers = [
            "up=alice", "up=bob", "up=alice", "up=bob", "up=alice", "up=bob",
        ];
        let api = api_with_trail(dir.path(), &callers).await;
        // The file starts with a header (seq 0), then the decisions 1 to 6.
        let newest = api.audit(&AuditQuery {
            limit: Some(2),
            ..AuditQuery::default()
        });
        assert_eq!(lines(&newest), [5, 6]);
        assert_eq!(newest["chain"]["intact"], true);
        // A poller passing back `last` sees every record once, oldest first.
        let mut seen = Vec::new();
        let mut after = 0;
        for _ in 0..10 {
            let page = api.audit(&AuditQuery {
                after: Some(after),
                limit: Some(2),
                ..AuditQuery::default()
            });
            seen.extend(lines(&page));
            let last = page["last"].as_u64().unwrap();
            if last == after {
                break;
            }
            after = last;
        }
        assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
        // Filters: bob's records only, and nothing for an unknown decision.
        let bob = api.audit(&AuditQuery {
            caller: Some("up=bob".into()),
            ..AuditQuery::default()
        });
        assert_eq!(lines(&bob), [2, 4, 6]);
        let none = api.audit(&AuditQuery {
            decision: Some("maybe".into()),
            ..AuditQuery::default()
        });
        assert!(lines(&none).is_empty());
        assert!(api.is_auditor(&CallerId::parse("up=alice").unwrap()));
        assert!(!api.is_auditor(&CallerId::parse("up=bob").unwrap()));
    }

    #[test]
    fn ddls_must_name_themselves_and_list_actions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rpcutil.json"),
            r#"{"metadata":{"name":"rpcutil"},"actions":[{"action":"ping"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let ddls = load_ddls(dir.path()).unwrap();
        assert_eq!(ddls.keys().collect::<Vec<_>>(), ["rpcutil"]);
        std::fs::write(
            dir.path().join("echo.json"),
            r#"{"metadata":{"name":"other"},"actions":[]}"#,
        )
        .unwrap();
        let err = load_ddls(dir.path()).unwrap_err();
        assert!(err.contains("metadata.name must be \"echo\""), "{err}");
    }
}
