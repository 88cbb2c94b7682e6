//! Replies across protocols. A request that crossed from one protocol into the other travels
//! under the id derived from its caller's (`wire::choria_v2::derived_request_id`), so a reply
//! that answers the derived id is for a caller of the other protocol, and is rebuilt in the
//! caller's protocol under the caller's own id. Nothing is remembered between the request and
//! the reply: any instance of the cluster translates any reply.
//!
//! A v1 federation header holds a 32-character id only, so a v2 caller's id cannot ride in it;
//! it is read back from the caller's reply subject instead, which go-choria's clients end with
//! the request id (`<collective>.reply.<caller hash>.<request id>`). A v2 caller whose request
//! goes to a v1 collective must use such a subject, or it is refused before anything is sent.

use super::Refusal;
use crate::security::{CallerId, Now};
use crate::subjects;
use crate::wire::choria_v1::{Reply, ReplyEnvelope, RpcReply, SecureReply};
use crate::wire::choria_v2::{self, derived_request_id};
use crate::wire::{DecodeError, Layer};

/// Nanoseconds in a second: v2 times are in nanoseconds, v1 times in seconds.
const NANOS: i64 = 1_000_000_000;

/// The last token of a reply subject.
fn last_token(reply_to: &str) -> &str {
    reply_to.rsplit('.').next().unwrap_or_default()
}

/// Refuses a v2 caller's request to a v1 collective unless its reply subject is the one
/// go-choria's clients use, `<collective>.reply.<md5 of the caller id>.<request id>`: its replies
/// are recognized and translated back by the id it ends with, and its caller's hash binds the
/// translated replies to the caller's own inbox.
pub(super) fn check_v2_reply_subject(
    reply_to: &str,
    caller: &CallerId,
    requestid: &str,
) -> Result<(), Refusal> {
    let collective = reply_to.split('.').next().unwrap_or_default();
    if reply_to == subjects::reply(collective, caller.as_str(), requestid) {
        return Ok(());
    }
    Err(Refusal::BadReplyTo(format!(
        "{reply_to} (a Choria protocol v2 caller reaching a v1 collective must use <collective>.reply.<md5 of {caller}>.{requestid}, as go-choria's clients do)"
    )))
}

/// The request id of the v2 caller a v1 reply answering `requestid` is for: the last token of
/// the caller's reply subject, when `requestid` was derived from it; `None` for a v1 caller.
pub(super) fn v2_caller_id<'r>(reply_to: &'r str, requestid: &str) -> Option<&'r str> {
    let last = last_token(reply_to);
    (last != requestid && derived_request_id(last) == requestid).then_some(last)
}

/// A v1 reply rebuilt as a v2 secure reply to request `caller_id`: the same message, sender
/// and agent, its time in nanoseconds, hashed. fedgate does not sign it: it holds no server
/// token in the caller's organization, and go-choria's clients check no reply signature.
pub(super) fn v1_to_v2(reply: &Reply, caller_id: &str) -> Vec<u8> {
    let envelope = &reply.envelope;
    secure_v2(
        reply.message.as_bytes().to_vec(),
        caller_id,
        &envelope.senderid,
        &envelope.agent,
        envelope.time.saturating_mul(NANOS),
    )
}

/// A hashed, unsigned v2 secure reply.
fn secure_v2(message: Vec<u8>, request: &str, sender: &str, agent: &str, time_ns: i64) -> Vec<u8> {
    let reply = choria_v2::Reply::new(
        message,
        request.to_string(),
        sender.to_string(),
        agent.to_string(),
        time_ns,
    );
    choria_v2::SecureReply::new(reply.encode()).encode()
}

/// A v2 reply (already checked) rebuilt as a v1 secure reply to request `caller_id`: the same
/// message, sender and agent, its time in seconds, hashed.
pub(super) fn v2_to_v1(reply: &choria_v2::Reply, caller_id: &str) -> Result<Vec<u8>, Refusal> {
    let message = String::from_utf8(reply.message.clone()).map_err(|_| {
        Refusal::Malformed(DecodeError::field(
            Layer::ReplyV2,
            "message",
            "is not UTF-8 text, which a v1 reply must carry",
        ))
    })?;
    let envelope = ReplyEnvelope {
        requestid: caller_id.to_string(),
        senderid: reply.sender.clone(),
        agent: reply.agent.clone(),
        time: reply.time.div_euclid(NANOS),
    };
    Ok(SecureReply::new(Reply::new(message, envelope).encode_string()).encode())
}

/// fedgate's own answer to a v2 caller whose request it refused: the refusal's body from
/// `sender`, as a v2 transport answering request `caller_id`, hashed.
pub(crate) fn refusal_v2(body: &RpcReply, caller_id: &str, sender: &str, agent: &str) -> Vec<u8> {
    let secure = secure_v2(
        body.encode_string().into_bytes(),
        caller_id,
        sender,
        agent,
        Now::system().unix_nanos(),
    );
    let headers = choria_v2::TransportHeaders {
        sender: sender.to_string(),
        ..choria_v2::TransportHeaders::default()
    };
    choria_v2::Transport::new(secure, headers).encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Limits;

    const V2_ID: &str = "2IR5hjVmS3Jc3DjuKMFo0vGWLzD";

    #[test]
    fn a_v2_callers_id_is_read_back_from_its_reply_subject_only_when_it_derives_the_reply_id() {
        let subject = format!("choria.reply.7419405695a186147a0de38f7e31a509.{V2_ID}");
        let derived = derived_request_id(V2_ID);
        assert_eq!(v2_caller_id(&subject, &derived), Some(V2_ID));
        // A v1 caller's reply subject ends with the id itself.
        let v1 = format!("c.reply.x.{derived}");
        assert_eq!(v2_caller_id(&v1, &derived), None);
        assert_eq!(
            v2_caller_id(&subject, "ffffffffffffffffffffffffffffffff"),
            None
        );
        // go-choria's inbox for up=rip.
        let rip = CallerId::parse("up=rip").unwrap();
        assert!(check_v2_reply_subject(&subject, &rip, V2_ID).is_ok());
        // Another caller's inbox, or a subject that does not end with the id, is refused.
        let bob = CallerId::parse("up=bob").unwrap();
        let other = "choria.reply.7419405695a186147a0de38f7e31a509.other";
        for (reply_to, caller) in [(subject.as_str(), &bob), (other, &rip)] {
            let err = check_v2_reply_subject(reply_to, caller, V2_ID).unwrap_err();
            assert_eq!(err.reason(), "bad_reply_to");
        }
    }

    #[test]
    fn replies_translate_both_ways_keeping_message_sender_agent_and_time() {
        let limits = Limits::default();
        let v1 = Reply::new(
            r#"{"statuscode":0,"statusmsg":"OK","data":{"pong":1}}"#.into(),
            ReplyEnvelope {
                requestid: derived_request_id(V2_ID),
                senderid: "n1.example.net".into(),
                agent: "rpcutil".into(),
                time: 1_780_000_000,
            },
        );
        let secure = choria_v2::SecureReply::decode(&v1_to_v2(&v1, V2_ID), &limits).unwrap();
        let v2 = secure.decode_reply(&limits).unwrap();
        assert_eq!(v2.request, V2_ID);
        assert_eq!(v2.sender, "n1.example.net");
        assert_eq!(v2.agent, "rpcutil");
        assert_eq!(v2.time, 1_780_000_000 * NANOS);
        assert_eq!(v2.message, v1.message.as_bytes());

        let back = v2_to_v1(&v2, "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b").unwrap();
        let back = SecureReply::decode(&back, &limits)
            .unwrap()
            .reply(&limits)
            .unwrap();
        assert_eq!(back.envelope.requestid, "6a6f3a2c1e8b4e0f9d1b2c3d4e5f6a7b");
        assert_eq!(back.envelope.time, 1_780_000_000);
        assert_eq!(back.message, v1.message);

        // fedgate's own refusal of a v2 caller answers under its KSUID.
        let body = RpcReply::new(
            "ping",
            crate::wire::choria_v1::StatusCode::Aborted,
            "fedgate refused the request: no",
            serde_json::json!({}),
        );
        let refusal = refusal_v2(&body, V2_ID, "fedgate:fb1", "rpcutil");
        let transport = choria_v2::Transport::decode(&refusal, &limits).unwrap();
        assert_eq!(transport.headers.sender, "fedgate:fb1");
        let refused = choria_v2::SecureReply::decode(&transport.data, &limits)
            .unwrap()
            .decode_reply(&limits)
            .unwrap();
        assert_eq!(
            (refused.request.as_str(), refused.agent.as_str()),
            (V2_ID, "rpcutil")
        );
        assert_eq!(refused.rpc(&limits).unwrap().statuscode, 1);

        let mut binary = v2.clone();
        binary.message = vec![0xff, 0xfe];
        assert_eq!(v2_to_v1(&binary, V2_ID).unwrap_err().reason(), "malformed");
    }
}
