//! `fedgate run`: serve the federations in the config as a broker instance until Ctrl-C, then drain.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use fedgate::config::{Config, FederationMode};
use fedgate::edge::{Dispatcher, Edge};
use fedgate::federation::{Broker, BrokerOptions};
use fedgate::wire::Limits;
use tokio_util::sync::CancellationToken;

/// Arguments of `fedgate run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, env = "FEDGATE_CONFIG")]
    config: PathBuf,
    /// Instance name; overrides `[instance] name`.
    #[arg(long, env = "FEDGATE_INSTANCE")]
    instance: Option<String>,
    /// Address for `/metrics`; overrides `[instance] metrics` (port 0 picks a free port).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
}

/// Runs until a signal, then drains.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // A write past the file size limit must fail (EFBIG) so the audit trail refuses the request,
    // rather than kill the process: listening replaces SIGXFSZ's default action.
    let _file_size_signal =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))?;
    // SIGHUP reloads the policy directory at once (file mode) instead of ending the process.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut base = Config::load(&args.config)?;
    if args.instance.is_some() {
        base.instance.name = args.instance;
    }
    if args.metrics.is_some() {
        base.instance.metrics = args.metrics;
    }
    let instance = base.instance.name_or_default();
    fedgate::config::validate_instance_name(&instance)
        .map_err(|problem| anyhow::anyhow!("instance name: {problem}"))?;
    // With a registry, the config is completed with its revision (or the cached one).
    let start = match &base.registry {
        Some(_) => {
            let start = fedgate::registry::follow::start(&base, &args.config, &instance).await?;
            eprintln!(
                "fedgate {instance}: registry revision {} (from the {})",
                start.manifest.revision, start.source
            );
            if let Some(refused) = &start.refused {
                eprintln!(
                    "fedgate {instance}: refused registry revision {}: {}",
                    refused.revision, refused.reason
                );
            }
            Some(start)
        }
        None => None,
    };
    let config = match &start {
        Some(start) => start.validated.config.clone(),
        None => base.clone(),
    };
    let stop = CancellationToken::new();
    let metrics = match config.instance.metrics {
        Some(addr) => {
            let handle = fedgate::metrics::install()?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding metrics on {addr}"))?;
            eprintln!(
                "fedgate {instance}: metrics on http://{}/metrics",
                listener.local_addr()?
            );
            let stopped = stop.clone();
            Some(tokio::spawn(fedgate::metrics::serve(
                listener,
                handle,
                async move { stopped.cancelled().await },
            )))
        }
        None => None,
    };
    // The edge and the broker share one gate (one policy store, one audit trail).
    let bridges: Vec<String> = config
        .legacy
        .iter()
        .filter(|(_, l)| l.bridge.is_some())
        .map(|(name, _)| name.clone())
        .collect();
    let facades: Vec<String> = config
        .legacy
        .iter()
        .filter(|(_, l)| l.choria.is_some())
        .map(|(name, _)| name.clone())
        .collect();
    let resigning: Vec<&str> = config
        .served_federations()
        .into_iter()
        .filter(|name| config.federations[*name].mode == FederationMode::Resign)
        .collect();
    let gate = if config.edge.is_some()
        || !bridges.is_empty()
        || !facades.is_empty()
        || !resigning.is_empty()
    {
        Some(fedgate::gateway::open_gate(&config, "edge", &instance).await?)
    } else {
        None
    };
    if let Some(gate) = &gate {
        // The watcher task (file mode only) ends when `stop` is cancelled.
        let _watcher = gate
            .rules
            .watch(stop.clone())
            .context("watching the policy directory")?;
    }
    let follower = match start {
        Some(start) => {
            let store = match &gate {
                Some(gate) => gate.rules.clone(),
                None => std::sync::Arc::new(fedgate::rules::RuleStore::new(
                    fedgate::rules::Rules::load(&config).map_err(anyhow::Error::msg)?,
                    None,
                )),
            };
            Some(fedgate::registry::Follower::spawn(
                base,
                args.config.clone(),
                instance.clone(),
                start,
                store,
                stop.clone(),
            )?)
        }
        None => None,
    };
    let options = BrokerOptions {
        instance: instance.clone(),
        workers: config.instance.workers.unwrap_or_else(default_workers),
        stats_interval: config.instance.stats_interval(),
        limits: Limits::default(),
        gate: gate.clone(),
    };
    if !resigning.is_empty() && config.identity_rules().is_empty() {
        tracing::warn!(
            federations = %resigning.join(", "),
            "resign mode without identity rules: every caller will be denied; set [identity] rules"
        );
    }
    // The legacy sides first: a federation may route to a legacy member as soon as the broker
    // says it is serving.
    let mut ingresses = Vec::new();
    if let Some(gate) = &gate {
        for name in &bridges {
            let ingress =
                fedgate::legacy::ingress::Ingress::start(&config, name, gate.clone(), &instance)
                    .await?;
            eprintln!("fedgate {instance}: bridging legacy {name}");
            ingresses.push(ingress);
        }
    }
    let mut served = Vec::new();
    if let Some(gate) = &gate {
        for name in &facades {
            let link =
                fedgate::legacy::LegacyLink::connect(name, &config.legacy[name], &instance).await?;
            let facade = fedgate::legacy::facade::Facade::start(
                &config,
                name,
                std::sync::Arc::new(link),
                gate.clone(),
                &instance,
            )
            .await?;
            eprintln!("fedgate {instance}: serving legacy {name} to Choria clients");
            served.push(facade);
        }
    }
    let mut broker = if config.served_federations().is_empty() && gate.is_some() {
        None
    } else {
        let broker = Broker::start(&config, options.clone()).await?;
        eprintln!(
            "fedgate {instance}: serving federations {}",
            config.served_federations().join(", ")
        );
        Some(broker)
    };
    let edge = match gate.as_ref().filter(|_| config.edge.is_some()) {
        Some(gate) => {
            let dispatcher = Dispatcher::connect(&config, gate.clone(), &instance)
                .await
                .map_err(|e| anyhow::anyhow!("edge: {e}"))?;
            let edge = Edge::start(&config, dispatcher, fedgate::metrics::install().ok()).await?;
            eprintln!("fedgate {instance}: edge on {}", edge.ws_url());
            Some(edge)
        }
        None => None,
    };
    // Serve until a signal; a registry revision that changes membership is served by a new
    // broker while the old one drains (both share the queue groups, so nothing is dropped).
    let mut handed_over = Vec::new();
    let mut membership = follower.as_ref().map(|f| f.membership());
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let change = async {
            match &mut membership {
                Some(changes) => changes.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => {
                match &gate {
                    Some(gate) if gate.rules.dir().is_some() => match gate.rules.reload() {
                        Ok(()) => eprintln!("fedgate {instance}: SIGHUP: policy reloaded"),
                        Err(e) => eprintln!("fedgate {instance}: SIGHUP: policy reload failed, keeping the last good policy: {e}"),
                    },
                    Some(_) => eprintln!("fedgate {instance}: SIGHUP: the rules come from the registry; nothing to reload"),
                    None => eprintln!("fedgate {instance}: SIGHUP: no policy to reload"),
                }
            }
            changed = change => {
                if !changed {
                    membership = None;
                    continue;
                }
                let Some(next) = membership.as_mut().and_then(|m| m.borrow_and_update().clone()) else {
                    continue;
                };
                let mut pending = Vec::new();
                if broker.is_some() {
                    match Broker::start(&next, options.clone()).await {
                        Ok(started) => {
                            if let Some(old) = broker.replace(started) {
                                let grace = config.instance.drain_timeout();
                                handed_over.retain(|task: &tokio::task::JoinHandle<_>| !task.is_finished());
                                handed_over.push(tokio::spawn(async move { old.shutdown(grace).await }));
                            }
                            eprintln!("fedgate {instance}: serving federations {} with revision {}", next.served_federations().join(", "), next.registry_revision().unwrap_or(0));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not serve the new membership; the broker keeps the old one");
                            pending.extend(next.served_federations().iter().map(|f| f.to_string()));
                        }
                    }
                }
                if let Some(edge) = &edge {
                    match edge.set_membership(&next) {
                        Ok(unreached) => pending.extend(unreached),
                        Err(e) => {
                            tracing::error!(error = %e, "the edge keeps the old membership");
                            pending.push("edge".into());
                        }
                    }
                }
                if let Some(follower) = &follower {
                    follower.membership_served(pending);
                }
            }
        }
    }
    eprintln!("fedgate {instance}: draining");
    if let Some(edge) = edge {
        edge.shutdown().await;
    }
    // The broker before the legacy sides, whose replies it relays while it drains.
    let drained = match broker {
        Some(broker) => {
            broker
                .shutdown(config.instance.drain_timeout())
                .await
                .complete
        }
        None => true,
    };
    for ingress in ingresses {
        ingress.shutdown(config.instance.drain_timeout()).await;
    }
    for facade in served {
        facade.shutdown(config.instance.drain_timeout()).await;
    }
    for old in handed_over {
        let _ = old.await;
    }
    // Completion records of requests still being counted.
    if let Some(gate) = &gate {
        gate.complete_due(true).await;
    }
    stop.cancel();
    if let Some(follower) = follower {
        follower.stopped().await;
    }
    if let Some(task) = metrics {
        let _ = task.await;
    }
    if !drained {
        eprintln!("fedgate {instance}: some messages were still in hand after the drain timeout");
    }
    Ok(ExitCode::SUCCESS)
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}
