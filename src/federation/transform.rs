//! Pure request and reply transforms of a Federation Broker: validate, route, rewrite headers.
//!
//! Nothing here does I/O or keeps state: all routing data travels in the transport headers, as
//! in go-choria's broker. Only unsigned headers change; `data` passes through byte for byte.

use std::collections::{BTreeMap, HashSet};

use std::sync::Arc;

use super::signers::ResignRules;
use crate::config::{Config, FederationMode, Route};
use crate::subjects::{self, Target, is_reply_subject};
use crate::wire::Limits;
use crate::wire::choria_v1::{FederationHeader, RelayTransport};

mod refusal;
pub use refusal::Refusal;

/// Where a group of targets goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// A member collective's network: publish to each target subject.
    Collective(String),
    /// A member federation's network: forward its targets to its cluster, at most `batch` per
    /// message (its `max_targets`).
    Federation {
        /// The member federation's name (its network).
        network: String,
        /// Its Federation Broker cluster name.
        cluster: String,
        /// Most targets it accepts in one message.
        batch: usize,
    },
}

impl Destination {
    /// The network the destination is on.
    pub fn network(&self) -> &str {
        match self {
            Destination::Collective(name) => name,
            Destination::Federation { network, .. } => network,
        }
    }
}

/// What one cluster of this instance needs to validate and route.
#[derive(Clone, Debug)]
pub struct ClusterRules {
    /// Cluster name used in subjects.
    pub cluster: String,
    /// How each reachable collective is reached.
    pub routes: BTreeMap<String, Destination>,
    /// Hop limit for incoming requests.
    pub max_hops: usize,
    /// Target limit per message.
    pub max_targets: usize,
    /// This instance's `seen-by` processor label for this cluster.
    pub label: String,
    /// Decode limits.
    pub limits: Limits,
    /// Verify, map and re-sign settings; `None` in pass-through mode.
    pub resign: Option<Arc<ResignRules>>,
}

impl ClusterRules {
    /// Rules for the served federation `name` of `config`, as seen by `instance`.
    pub fn from_config(
        config: &Config,
        name: &str,
        instance: &str,
        limits: Limits,
    ) -> Result<Self, String> {
        let federation = config
            .federation(name)
            .ok_or_else(|| format!("no federation {name}"))?;
        let cluster = federation.cluster_name(name).to_string();
        let mut routes = BTreeMap::new();
        for (collective, route) in config.routes(name)? {
            let destination = match route {
                Route::Direct => Destination::Collective(collective.clone()),
                Route::Via(network) => {
                    // routes() only yields federations that are defined in the config.
                    let member = config
                        .federation(&network)
                        .ok_or_else(|| format!("no federation {network}"))?;
                    Destination::Federation {
                        cluster: member.cluster_name(&network).to_string(),
                        batch: member.max_targets,
                        network,
                    }
                }
            };
            routes.insert(collective, destination);
        }
        let resign = match federation.mode {
            FederationMode::PassThrough => None,
            FederationMode::Resign => {
                Some(Arc::new(ResignRules::from_config(config, name, limits)?))
            }
        };
        Ok(ClusterRules {
            resign,
            label: hop_label(instance, &cluster),
            cluster,
            routes,
            max_hops: federation.max_hops,
            max_targets: federation.max_targets,
            limits,
        })
    }
}

/// The `seen-by` processor label of an instance in a cluster.
pub fn hop_label(instance: &str, cluster: &str) -> String {
    format!("{instance} (fedgate federation {cluster})")
}

/// A federated request that passed every check, with its targets grouped by destination.
#[derive(Debug)]
pub struct RoutedRequest<'a> {
    transport: RelayTransport<'a>,
    reply_to: String,
    groups: BTreeMap<Destination, Vec<String>>,
}

/// Validates a federated request received on `choria.federation.<cluster>.federation`.
pub fn route_request<'a>(
    bytes: &'a [u8],
    rules: &ClusterRules,
) -> Result<RoutedRequest<'a>, Refusal> {
    let transport = RelayTransport::decode(bytes, &rules.limits)?;
    let headers = &transport.headers;
    let federation = headers.federation.as_ref().ok_or(Refusal::NotFederated)?;
    if federation.req.is_none() {
        return Err(Refusal::MissingRequestId);
    }
    let hops = headers.seen_by.len();
    if hops >= rules.max_hops {
        return Err(Refusal::MaxHops {
            hops,
            max: rules.max_hops,
        });
    }
    if headers.seen_by.iter().any(|hop| hop[1] == rules.label) {
        return Err(Refusal::Loop {
            label: rules.label.clone(),
        });
    }
    let reply_to = headers.reply_to.clone().ok_or(Refusal::MissingReplyTo)?;
    if !is_reply_subject(&reply_to) {
        return Err(Refusal::BadReplyTo(reply_to));
    }
    let groups = group_targets(&federation.target, rules)?;
    Ok(RoutedRequest {
        transport,
        reply_to,
        groups,
    })
}

fn group_targets(
    targets: &[String],
    rules: &ClusterRules,
) -> Result<BTreeMap<Destination, Vec<String>>, Refusal> {
    if targets.is_empty() {
        return Err(Refusal::NoTargets);
    }
    if targets.len() > rules.max_targets {
        return Err(Refusal::TooManyTargets {
            count: targets.len(),
            max: rules.max_targets,
        });
    }
    let mut seen = HashSet::with_capacity(targets.len());
    let mut groups: BTreeMap<Destination, Vec<String>> = BTreeMap::new();
    for target in targets {
        let parsed = Target::parse(target).ok_or_else(|| Refusal::BadTarget(target.clone()))?;
        let destination = rules
            .routes
            .get(parsed.collective())
            .ok_or_else(|| Refusal::NotMember(target.clone()))?;
        if seen.insert(target.as_str()) {
            groups
                .entry(destination.clone())
                .or_default()
                .push(target.clone());
        }
    }
    Ok(groups)
}

/// One publish a broker makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    /// Subjects to publish the payload to, on the destination's network.
    pub subjects: Vec<String>,
    /// The rewritten transport.
    pub payload: Vec<u8>,
}

impl<'a> RoutedRequest<'a> {
    /// The destinations, each with its targets.
    pub fn groups(&self) -> &BTreeMap<Destination, Vec<String>> {
        &self.groups
    }

    /// The transport as received.
    pub fn transport(&self) -> &RelayTransport<'a> {
        &self.transport
    }

    /// The client's reply subject.
    pub fn reply_to(&self) -> &str {
        &self.reply_to
    }

    /// The request id from the federation header.
    pub fn request_id(&self) -> &str {
        self.transport
            .headers
            .federation
            .as_ref()
            .and_then(|f| f.req.as_deref())
            .unwrap_or("")
    }

    /// Rewrites the headers for one destination, as go-choria's request transformer does: the
    /// reply-to is saved, replaced by the cluster's collective subject, targets are cleared, and a
    /// hop `[inbound, label, outbound]` is appended. A member federation instead gets its targets
    /// in messages of at most its batch size, with a reply subject that wraps the client's.
    pub fn egress(
        &self,
        destination: &Destination,
        targets: &[String],
        rules: &ClusterRules,
        inbound: &str,
        outbound: &str,
    ) -> Vec<Egress> {
        self.egress_with(
            &self.transport,
            self.request_id(),
            destination,
            targets,
            rules,
            inbound,
            outbound,
        )
    }

    /// [`Self::egress`] for another transport body: a re-signed request with its targets
    /// renamed into the collective's own name, whose federation header carries `req` (the id a
    /// request that crossed into a v1 collective travels under).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn egress_with(
        &self,
        transport: &RelayTransport<'_>,
        req: &str,
        destination: &Destination,
        targets: &[String],
        rules: &ClusterRules,
        inbound: &str,
        outbound: &str,
    ) -> Vec<Egress> {
        let mut headers = transport.headers.clone();
        headers.record_hop(inbound, &rules.label, outbound);
        let req = Some(req.to_string());
        match destination {
            Destination::Collective(_) => {
                headers.reply_to = Some(subjects::federation_collective(&rules.cluster));
                headers.federation = Some(FederationHeader {
                    req,
                    reply_to: Some(self.reply_to.clone()),
                    target: Vec::new(),
                });
                vec![Egress {
                    subjects: targets.to_vec(),
                    payload: transport.encode_with(&headers),
                }]
            }
            Destination::Federation { cluster, batch, .. } => {
                headers.reply_to = Some(subjects::federation_reply(&rules.cluster, &self.reply_to));
                targets
                    .chunks((*batch).max(1))
                    .map(|chunk| {
                        headers.federation = Some(FederationHeader {
                            req: req.clone(),
                            reply_to: None,
                            target: chunk.to_vec(),
                        });
                        Egress {
                            subjects: vec![subjects::federation_ingest(cluster)],
                            payload: transport.encode_with(&headers),
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Validates a reply on `choria.federation.<cluster>.collective` and rewrites it for the client:
/// the federation header is removed and a hop appended. Returns the client's reply subject.
pub fn route_reply(
    bytes: &[u8],
    rules: &ClusterRules,
    inbound: &str,
    outbound: &str,
) -> Result<(String, Vec<u8>), Refusal> {
    let mut transport = RelayTransport::decode(bytes, &rules.limits)?;
    let (_, reply_to) = take_reply_header(&mut transport)?;
    transport
        .headers
        .record_hop(inbound, &rules.label, outbound);
    Ok((reply_to, transport.encode()))
}

/// Removes the federation header of a member's reply and returns its request id and the
/// client's reply subject, refusing a header without either or a subject outside the reply
/// space.
pub(super) fn take_reply_header(
    transport: &mut RelayTransport<'_>,
) -> Result<(String, String), Refusal> {
    let federation = transport
        .headers
        .federation
        .take()
        .ok_or(Refusal::NotFederated)?;
    let req = federation.req.ok_or(Refusal::MissingRequestId)?;
    let reply_to = federation.reply_to.ok_or(Refusal::MissingReplyTo)?;
    if !is_reply_subject(&reply_to) {
        return Err(Refusal::BadReplyTo(reply_to));
    }
    Ok((req, reply_to))
}

/// Validates a reply that a member federation's broker sent to
/// `choria.federation.<cluster>.reply.<R>`: `R` must be a reply subject and the reply must arrive
/// unfederated, as a broker leaves it. Returns `R`, where it goes in this cluster's network, with
/// a hop appended.
pub fn route_chained_reply(
    subject: &str,
    bytes: &[u8],
    rules: &ClusterRules,
    inbound: &str,
    outbound: &str,
) -> Result<(String, Vec<u8>), Refusal> {
    let prefix = subjects::federation_reply_prefix(&rules.cluster);
    let reply_to = subject
        .strip_prefix(&prefix)
        .unwrap_or_default()
        .to_string();
    if !is_reply_subject(&reply_to) {
        return Err(Refusal::BadReplyTo(reply_to));
    }
    let mut transport = RelayTransport::decode(bytes, &rules.limits)?;
    if transport.headers.federation.is_some() {
        return Err(Refusal::StillFederated);
    }
    transport
        .headers
        .record_hop(inbound, &rules.label, outbound);
    Ok((reply_to, transport.encode()))
}

#[cfg(test)]
#[path = "transform_tests.rs"]
mod tests;
