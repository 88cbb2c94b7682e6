//! The audit stream itself: the configuration fedgate creates it with, the checks that it cannot
//! lose records, where an instance's chain ends in it, and reading it all back.

use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, LastRawMessageErrorKind, StorageType, Stream,
};
use async_nats::jetstream::{self, ErrorCode};
use futures::StreamExt;

use super::JetStreamOptions;
use crate::audit::record::{self, ChainState, MAX_RECORD_BYTES};
use crate::nats::{self, NatsEndpoint};

/// The stream configuration fedgate creates.
fn stream_config(options: &JetStreamOptions) -> StreamConfig {
    StreamConfig {
        name: options.stream.clone(),
        description: Some("fedgate audit trail: one hash chain per instance subject".into()),
        subjects: vec![format!("{}.>", options.subject)],
        storage: StorageType::File,
        num_replicas: options.replicas,
        max_bytes: options.max_bytes,
        discard: DiscardPolicy::New,
        max_message_size: (MAX_RECORD_BYTES + 1024) as i32,
        duplicate_window: options.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_rollup: false,
        ..StreamConfig::default()
    }
}

/// Gets the stream, creating it if it does not exist, and checks it cannot lose records.
pub(super) async fn ensure_stream(
    context: &jetstream::Context,
    options: &JetStreamOptions,
) -> Result<Stream, String> {
    let not_found = |code: ErrorCode| code == ErrorCode::STREAM_NOT_FOUND;
    let mut stream = match context.get_stream(&options.stream).await {
        Ok(stream) => stream,
        Err(err) => match err.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(js) if not_found(js.error_code()) => {
                match context.create_stream(stream_config(options)).await {
                    Ok(stream) => stream,
                    // Another instance may have created it first; if it is still not there,
                    // the reason creating it failed is the one to report (for example, the
                    // server cannot reserve `max_bytes` of storage).
                    Err(created) => context.get_stream(&options.stream).await.map_err(|_| {
                        format!(
                            "cannot create the stream ({} bytes, {} replica(s)): {created}",
                            options.max_bytes, options.replicas
                        )
                    })?,
                }
            }
            _ => return Err(format!("cannot open the stream: {err}")),
        },
    };
    let config = &stream
        .info()
        .await
        .map_err(|e| format!("cannot read the stream's configuration: {e}"))?
        .config;
    nats::warn_if_one_replica(
        &context.client(),
        "the audit trail",
        &options.stream,
        config.num_replicas,
    );
    if !config.deny_delete || !config.deny_purge {
        return Err(
            "the stream allows deleting or purging messages; an audit trail must not (set deny_delete and deny_purge)".into(),
        );
    }
    let subject = options.chain_subject();
    if !config
        .subjects
        .iter()
        .any(|pattern| subject_matches(pattern, &subject))
    {
        return Err(format!(
            "the stream's subjects {:?} do not include {subject}",
            config.subjects
        ));
    }
    Ok(stream)
}

/// NATS subject matching: `*` is one token, `>` the rest.
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for part in pattern.split('.') {
        match (part, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (expected, Some(token)) if expected == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// Where this instance's chain ends in the stream.
#[derive(Clone, Debug)]
pub(super) struct ChainEnd {
    /// The next record's chain position.
    pub(super) state: ChainState,
    /// The stream sequence of the last record on the subject (0: none).
    pub(super) stream_seq: u64,
    /// The id of the last record on the subject.
    pub(super) last_id: Option<String>,
}

/// Reads the last record on `subject` and checks it: a chain whose end does not verify is not
/// continued.
pub(super) async fn chain_end(
    stream: &Stream,
    subject: &str,
    instance: &str,
) -> Result<ChainEnd, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => {
            let last = record::check_line(&message.payload).map_err(|e| {
                format!(
                    "the last record on {subject} (stream sequence {}) does not verify: {e}",
                    message.sequence
                )
            })?;
            if last.instance != instance {
                return Err(format!(
                    "the last record on {subject} was written by instance {:?}",
                    last.instance
                ));
            }
            Ok(ChainEnd {
                state: ChainState {
                    seq: last.seq + 1,
                    prev: last.hash,
                },
                stream_seq: message.sequence,
                last_id: Some(last.id),
            })
        }
        Err(err) if matches!(err.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(ChainEnd {
            state: ChainState::genesis(),
            stream_seq: 0,
            last_id: None,
        }),
        Err(err) => Err(format!("cannot read the end of {subject}: {err}")),
    }
}

/// How long reading the stream waits for the next record before it gives up.
const READ_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Every record of the stream, grouped by instance subject, in stream order: what `fedgate audit
/// export` writes out for review.
pub async fn read_all(
    endpoint: &NatsEndpoint,
    stream: &str,
    mut each: impl FnMut(&str, &[u8]) -> Result<(), String>,
) -> Result<u64, String> {
    let client = nats::connect(endpoint, "fedgate audit export")
        .await
        .map_err(|e| e.to_string())?;
    let context = jetstream::new(client);
    let mut stream = context
        .get_stream(stream)
        .await
        .map_err(|e| format!("cannot open stream {stream}: {e}"))?;
    let last = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(0);
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| format!("cannot read the stream: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot read the stream: {e}"))?;
    let mut count = 0;
    loop {
        let Ok(next) = tokio::time::timeout(READ_IDLE, messages.next()).await else {
            return Err(format!(
                "reading the stream: no record for {} s after {count} of {last} (a subject the server's permissions refuse shows as this wait)",
                READ_IDLE.as_secs()
            ));
        };
        let Some(message) = next else { break };
        let message = message.map_err(|e| format!("reading the stream: {e}"))?;
        let sequence = message
            .info()
            .map_err(|e| format!("reading the stream: {e}"))?
            .stream_sequence;
        each(message.subject.as_str(), &message.payload)?;
        count += 1;
        if sequence >= last {
            break;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subjects_match_as_nats_matches_them() {
        assert!(subject_matches("fedgate.audit.>", "fedgate.audit.gw1"));
        assert!(subject_matches("fedgate.audit.*", "fedgate.audit.gw1"));
        assert!(subject_matches("fedgate.audit.gw1", "fedgate.audit.gw1"));
        assert!(!subject_matches("fedgate.audit.>", "fedgate.audit"));
        assert!(!subject_matches("fedgate.audit.*", "fedgate.audit.gw1.x"));
        assert!(!subject_matches("fedgate.audit.gw2", "fedgate.audit.gw1"));
        assert!(!subject_matches("fedgate.audit.gw1.x", "fedgate.audit.gw1"));
    }
}
