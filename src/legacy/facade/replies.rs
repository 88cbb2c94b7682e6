//! What the facade sends back on the Choria side: legacy replies as the Choria replies a node
//! would send, routed as the request was.

use bytes::Bytes;

use crate::client::ReplyEvent;
use crate::security::Now;
use crate::wire::choria_v1::{
    FederationHeader, Reply, ReplyEnvelope, RpcReply, SecureReply, StatusCode, Transport,
    TransportHeaders,
};

/// `choria.federation.<cluster>.collective`, where a Federation Broker cluster takes replies.
pub(super) fn is_federation_collective(subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    matches!(tokens.as_slice(), ["choria", "federation", cluster, "collective"]
        if !cluster.is_empty() && !cluster.contains(['*', '>']))
}

/// What a reply carries over from its request, as a Choria server's does.
pub(super) struct Hop<'r> {
    pub(super) request: &'r TransportHeaders,
    pub(super) server: &'r str,
    pub(super) legacy: &'r str,
}

/// A legacy reply, verified and translated, as the Choria reply a node would send: a federated
/// request's routing data and hops are copied, and the facade records its own hop.
pub(super) fn choria_reply(
    requestid: &str,
    agent: &str,
    action: &str,
    reply: &ReplyEvent,
    hop: &Hop<'_>,
) -> Bytes {
    let message = if agent == "discovery" {
        "pong".to_string()
    } else {
        let status = match reply.statuscode {
            0 => StatusCode::Ok,
            1 => StatusCode::Aborted,
            2 => StatusCode::UnknownAction,
            3 => StatusCode::MissingData,
            4 => StatusCode::InvalidData,
            _ => StatusCode::UnknownError,
        };
        RpcReply::new(action, status, &reply.statusmsg, reply.data.clone()).encode_string()
    };
    let envelope = ReplyEnvelope {
        requestid: requestid.to_string(),
        senderid: reply.sender.clone(),
        agent: agent.to_string(),
        time: Now::system().unix_seconds(),
    };
    let secure = SecureReply::new(Reply::new(message, envelope).encode_string());
    let mut headers = TransportHeaders {
        mc_sender: Some(reply.sender.clone()),
        ..TransportHeaders::default()
    };
    if let Some(federation) = &hop.request.federation {
        headers.federation = Some(FederationHeader {
            req: federation.req.clone(),
            reply_to: federation.reply_to.clone(),
            target: Vec::new(),
        });
        headers.seen_by = hop.request.seen_by.clone();
    }
    headers.record_hop(
        hop.server,
        &format!("{} (fedgate legacy {})", reply.sender, hop.legacy),
        hop.server,
    );
    Bytes::from(Transport::new(secure.encode(), headers).encode())
}
