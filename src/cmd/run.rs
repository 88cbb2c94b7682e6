//! `fedgate run`: serve the federations in the config as a broker instance until Ctrl-C, then drain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use fedgate::config::{Config, FederationMode};
use fedgate::edge::{Dispatcher, Edge};
use fedgate::federation::{Broker, BrokerOptions, Drained};
use fedgate::gateway::Gate;
use fedgate::legacy::facade::Facade;
use fedgate::legacy::ingress::Ingress;
use fedgate::registry::{Follower, Start};
use fedgate::rules::RuleStore;
use fedgate::wire::Limits;
use tokio::signal::unix::{Signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::STATUS;

/// Arguments of `fedgate run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long, env = "FEDGATE_CONFIG")]
    config: PathBuf,
    /// Instance name; overrides `[instance] name`.
    #[arg(long, env = "FEDGATE_INSTANCE")]
    instance: Option<String>,
    /// Address for `/metrics`, `/healthz` and `/readyz`; overrides `[instance] metrics` (port 0
    /// picks a free port).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
}

impl Args {
    /// `[instance] log_format` of the config, or text when it does not load.
    pub fn log_format(&self) -> fedgate::config::LogFormat {
        Config::load(&self.config).map_or_else(|_| Default::default(), |c| c.instance.log_format)
    }
}

/// Runs until a signal, then drains.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // A write past the file size limit must fail (EFBIG) so the audit trail refuses the request,
    // rather than kill the process: listening replaces SIGXFSZ's default action.
    let _file_size_signal = tokio::signal::unix::signal(SignalKind::from_raw(libc::SIGXFSZ))?;
    // SIGHUP reloads the policy directory at once (file mode) instead of ending the process.
    let hangup = tokio::signal::unix::signal(SignalKind::hangup())?;
    // Listened for before anything starts, so a SIGTERM during start-up is never lost: it stops
    // the start (below), or the serving once started.
    let mut shutdown = fedgate::cli::Shutdown::listen()?;
    let (base, instance) = match load_config(&args) {
        Ok(loaded) => loaded,
        Err(err) => {
            // A bad config stays bad: its own exit code, so a service manager stops restarting.
            eprintln!("fedgate: {err:#}");
            return Ok(ExitCode::from(super::EX_CONFIG));
        }
    };
    let stop = CancellationToken::new();
    // A signal while starting (a broker slow to answer, say) stops the process at once.
    let starting = start_serving(&args, base, &instance, &stop);
    let (mut serving, follower, metrics) = tokio::select! {
        started = starting => started?,
        _ = shutdown.recv() => {
            tracing::warn!(target: STATUS, "fedgate {instance}: stopped while starting");
            super::systemd::stopping();
            stop.cancel();
            return Ok(ExitCode::SUCCESS);
        }
    };
    // Every side has said it serves: systemd may start what waits for fedgate.
    super::systemd::ready(&instance);
    serving
        .serve(hangup, &mut shutdown, follower.as_ref())
        .await;
    let drained = serving.drain().await;
    stop.cancel();
    if let Some(follower) = follower {
        follower.stopped().await;
    }
    if let Some(task) = metrics {
        let _ = task.await;
    }
    if !drained {
        tracing::warn!(target: STATUS, "fedgate {instance}: some messages were still in hand after the drain timeout");
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything `run` serves, started: the registry's revision, metrics, the gate, the registry
/// follower and the serving sides.
async fn start_serving(
    args: &Args,
    base: Config,
    instance: &str,
    stop: &CancellationToken,
) -> anyhow::Result<(
    Serving,
    Option<Follower>,
    Option<JoinHandle<std::io::Result<()>>>,
)> {
    // With a registry, the config is completed with its revision (or the cached one).
    let start = match &base.registry {
        Some(_) => Some(registry_start(&base, &args.config, instance).await?),
        None => None,
    };
    let config = match &start {
        Some(start) => start.validated.config.clone(),
        None => base.clone(),
    };
    let metrics = serve_metrics(&config, instance, stop).await?;
    let sides = Sides::of(&config);
    let gate = open_gate(&config, &sides, instance, stop).await?;
    warn_exposed(&config, instance);
    let follower = match start {
        Some(start) => Some(Follower::spawn(
            base,
            args.config.clone(),
            instance.to_string(),
            start,
            rule_store(gate.as_ref(), &config)?,
            stop.clone(),
        )?),
        None => None,
    };
    let serving = Serving::start(config, gate, &sides, instance).await?;
    Ok((serving, follower, metrics))
}

/// The config file with the command line's overrides, and the validated instance name.
fn load_config(args: &Args) -> anyhow::Result<(Config, String)> {
    let mut base = Config::load(&args.config)?;
    if args.instance.is_some() {
        base.instance.name = args.instance.clone();
    }
    if args.metrics.is_some() {
        base.instance.metrics = args.metrics;
    }
    let instance = base.instance.name_or_default();
    fedgate::config::validate_instance_name(&instance)
        .map_err(|problem| anyhow::anyhow!("instance name: {problem}"))?;
    Ok((base, instance))
}

/// Says in the log which audit, users and token key files group or others can
/// read: they hold who did what, password hashes and the key tokens are signed with.
fn warn_exposed(config: &Config, instance: &str) {
    for exposed in config.exposed_files() {
        tracing::warn!(
            target: STATUS,
            "fedgate {instance}: warning: the {} {} has mode {:o}; it should be readable by its owner only (chmod 600)",
            exposed.what,
            exposed.path.display(),
            exposed.mode
        );
    }
}

/// The registry revision to start with (or the cached one), said in the log.
async fn registry_start(base: &Config, path: &Path, instance: &str) -> anyhow::Result<Start> {
    let start = fedgate::registry::follow::start(base, path, instance).await?;
    tracing::info!(target: STATUS,
        "fedgate {instance}: registry revision {} (from the {})",
        start.manifest.revision, start.source
    );
    if let Some(refused) = &start.refused {
        tracing::warn!(target: STATUS,
            "fedgate {instance}: refused registry revision {}: {}",
            refused.revision, refused.reason
        );
    }
    Ok(start)
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `stop`, when the config gives it an
/// address.
async fn serve_metrics(
    config: &Config,
    instance: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Option<JoinHandle<std::io::Result<()>>>> {
    let Some(addr) = config.instance.metrics else {
        return Ok(None);
    };
    let handle = fedgate::metrics::install()?;
    fedgate::metrics::build_info(instance);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics on {addr}"))?;
    tracing::info!(target: STATUS,
        "fedgate {instance}: metrics on http://{}/metrics",
        listener.local_addr()?
    );
    let stopped = stop.clone();
    Ok(Some(tokio::spawn(fedgate::metrics::serve(
        listener,
        handle,
        fedgate::metrics::certs::configured(config),
        async move { stopped.cancelled().await },
    ))))
}

/// The parts of the config that admit requests through the gate, besides the edge.
struct Sides {
    /// Legacy collectives bridged to Choria.
    bridges: Vec<String>,
    /// Legacy collectives served to Choria clients.
    facades: Vec<String>,
    /// Served federations in resign mode.
    resigning: Vec<String>,
}

impl Sides {
    /// The sides `config` serves.
    fn of(config: &Config) -> Sides {
        let legacy = |has: fn(&fedgate::config::LegacyConfig) -> bool| -> Vec<String> {
            config
                .legacy
                .iter()
                .filter(|(_, l)| has(l))
                .map(|(name, _)| name.clone())
                .collect()
        };
        Sides {
            bridges: legacy(|l| l.bridge.is_some()),
            facades: legacy(|l| l.choria.is_some()),
            resigning: config
                .served_federations()
                .into_iter()
                .filter(|name| config.federations[*name].mode == FederationMode::Resign)
                .map(str::to_string)
                .collect(),
        }
    }
}

/// The gate the edge and the broker share (one policy store, one audit trail), when anything
/// admits requests; in file mode its policy directory is watched until `stop`.
async fn open_gate(
    config: &Config,
    sides: &Sides,
    instance: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Arc<Gate>>> {
    if config.edge.is_none()
        && sides.bridges.is_empty()
        && sides.facades.is_empty()
        && sides.resigning.is_empty()
    {
        return Ok(None);
    }
    let gate = fedgate::gateway::open_gate(config, "edge", instance).await?;
    // The watcher task (file mode only) ends when `stop` is cancelled.
    let _watcher = gate
        .rules
        .watch(stop.clone())
        .context("watching the policy directory")?;
    Ok(Some(gate))
}

/// The rule store the registry follower installs revisions in: the gate's, or one of its own.
fn rule_store(gate: Option<&Arc<Gate>>, config: &Config) -> anyhow::Result<Arc<RuleStore>> {
    Ok(match gate {
        Some(gate) => gate.rules.clone(),
        None => Arc::new(RuleStore::new(
            fedgate::rules::Rules::load(config).map_err(anyhow::Error::msg)?,
            None,
        )),
    })
}

/// What the process serves: the legacy sides, the broker and the edge, around one gate.
struct Serving {
    instance: String,
    config: Config,
    options: BrokerOptions,
    gate: Option<Arc<Gate>>,
    ingresses: Vec<Ingress>,
    facades: Vec<Facade>,
    broker: Option<Broker>,
    edge: Option<Edge>,
    /// Brokers a registry revision replaced, draining.
    handed_over: Vec<JoinHandle<Drained>>,
}

impl Serving {
    /// Starts the legacy sides, then the broker, then the edge.
    async fn start(
        config: Config,
        gate: Option<Arc<Gate>>,
        sides: &Sides,
        instance: &str,
    ) -> anyhow::Result<Serving> {
        let options = BrokerOptions {
            instance: instance.to_string(),
            workers: config.instance.workers.unwrap_or_else(default_workers),
            stats_interval: config.instance.stats_interval(),
            limits: Limits::default(),
            gate: gate.clone(),
        };
        if !sides.resigning.is_empty() && config.identity_rules().is_empty() {
            tracing::warn!(
                federations = %sides.resigning.join(", "),
                "resign mode without identity rules: every caller will be denied; set [identity] rules"
            );
        }
        // The legacy sides first: a federation may route to a legacy member as soon as the broker
        // says it is serving.
        let (ingresses, facades) = match &gate {
            Some(gate) => (
                start_bridges(&config, gate, &sides.bridges, instance).await?,
                start_facades(&config, gate, &sides.facades, instance).await?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let broker = start_broker(&config, &options, instance).await?;
        let edge = match gate.as_ref().filter(|_| config.edge.is_some()) {
            Some(gate) => Some(start_edge(&config, gate, instance).await?),
            None => None,
        };
        Ok(Serving {
            instance: instance.to_string(),
            config,
            options,
            gate,
            ingresses,
            facades,
            broker,
            edge,
            handed_over: Vec::new(),
        })
    }

    /// Serves until a signal; a registry revision that changes membership is served by a new
    /// broker while the old one drains (both share the queue groups, so nothing is dropped).
    async fn serve(
        &mut self,
        mut hangup: Signal,
        shutdown: &mut fedgate::cli::Shutdown,
        follower: Option<&Follower>,
    ) {
        let mut membership = follower.map(|f| f.membership());
        loop {
            let change = async {
                match &mut membership {
                    Some(changes) => changes.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = hangup.recv() => self.reload_policy(),
                changed = change => {
                    if !changed {
                        membership = None;
                        continue;
                    }
                    let Some(next) = membership.as_mut().and_then(|m| m.borrow_and_update().clone()) else {
                        continue;
                    };
                    let pending = self.serve_membership(&next).await;
                    if let Some(follower) = follower {
                        follower.membership_served(pending);
                    }
                }
            }
        }
    }

    /// SIGHUP: reloads the policy directory, in file mode; systemd sees the reload.
    fn reload_policy(&self) {
        super::systemd::reloading();
        self.reload_policy_dir();
        super::systemd::reloaded();
    }

    fn reload_policy_dir(&self) {
        let instance = &self.instance;
        match &self.gate {
            Some(gate) if gate.rules.dir().is_some() => match gate.rules.reload() {
                Ok(()) => {
                    tracing::info!(target: STATUS, "fedgate {instance}: SIGHUP: policy reloaded")
                }
                Err(e) => tracing::warn!(target: STATUS,
                    "fedgate {instance}: SIGHUP: policy reload failed, keeping the last good policy: {e}"
                ),
            },
            Some(_) => tracing::info!(target: STATUS,
                "fedgate {instance}: SIGHUP: the rules come from the registry; nothing to reload"
            ),
            None => {
                tracing::info!(target: STATUS, "fedgate {instance}: SIGHUP: no policy to reload")
            }
        }
    }

    /// Serves a revision's membership with a new broker and the edge; gives back what is still
    /// pending (federations whose broker could not start, members the edge does not reach).
    async fn serve_membership(&mut self, next: &Config) -> Vec<String> {
        let mut pending = Vec::new();
        if self.broker.is_some() {
            match Broker::start(next, self.options.clone()).await {
                Ok(started) => {
                    if let Some(old) = self.broker.replace(started) {
                        let grace = self.config.instance.drain_timeout();
                        self.handed_over.retain(|task| !task.is_finished());
                        self.handed_over
                            .push(tokio::spawn(async move { old.shutdown(grace).await }));
                    }
                    tracing::info!(target: STATUS,
                        "fedgate {}: serving federations {} with revision {}",
                        self.instance,
                        next.served_federations().join(", "),
                        next.registry_revision().unwrap_or(0)
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not serve the new membership; the broker keeps the old one");
                    pending.extend(next.served_federations().iter().map(|f| f.to_string()));
                }
            }
        }
        if let Some(edge) = &self.edge {
            match edge.set_membership(next) {
                Ok(unreached) => pending.extend(unreached),
                Err(e) => {
                    tracing::error!(error = %e, "the edge keeps the old membership");
                    pending.push("edge".into());
                }
            }
        }
        pending
    }

    /// Stops taking requests and drains; false when the broker still held messages at the
    /// drain timeout.
    async fn drain(self) -> bool {
        tracing::info!(target: STATUS, "fedgate {}: draining", self.instance);
        super::systemd::stopping();
        if let Some(edge) = self.edge {
            edge.shutdown().await;
        }
        let grace = self.config.instance.drain_timeout();
        // The broker before the legacy sides, whose replies it relays while it drains.
        let drained = match self.broker {
            Some(broker) => broker.shutdown(grace).await.complete,
            None => true,
        };
        for ingress in self.ingresses {
            ingress.shutdown(grace).await;
        }
        for facade in self.facades {
            facade.shutdown(grace).await;
        }
        for old in self.handed_over {
            let _ = old.await;
        }
        // Completion records of requests still being counted.
        if let Some(gate) = &self.gate {
            gate.complete_due(true).await;
            // Last: the trail ends with what the drain recorded, anchored.
            gate.auditor.close().await;
        }
        drained
    }
}

/// The bridges of legacy collectives to Choria.
async fn start_bridges(
    config: &Config,
    gate: &Arc<Gate>,
    names: &[String],
    instance: &str,
) -> anyhow::Result<Vec<Ingress>> {
    let mut ingresses = Vec::new();
    for name in names {
        let ingress = Ingress::start(config, name, gate.clone(), instance).await?;
        tracing::info!(target: STATUS, "fedgate {instance}: bridging legacy {name}");
        ingresses.push(ingress);
    }
    Ok(ingresses)
}

/// The legacy collectives served to Choria clients.
async fn start_facades(
    config: &Config,
    gate: &Arc<Gate>,
    names: &[String],
    instance: &str,
) -> anyhow::Result<Vec<Facade>> {
    let mut facades = Vec::new();
    for name in names {
        let link =
            fedgate::legacy::LegacyLink::connect(name, &config.legacy[name], instance).await?;
        let facade = Facade::start(config, name, Arc::new(link), gate.clone(), instance).await?;
        tracing::info!(target: STATUS, "fedgate {instance}: serving legacy {name} to Choria clients");
        facades.push(facade);
    }
    Ok(facades)
}

/// The federation broker, unless the gate's ingresses are all this process serves.
async fn start_broker(
    config: &Config,
    options: &BrokerOptions,
    instance: &str,
) -> anyhow::Result<Option<Broker>> {
    if config.served_federations().is_empty() && options.gate.is_some() {
        return Ok(None);
    }
    let broker = Broker::start(config, options.clone()).await?;
    tracing::info!(target: STATUS,
        "fedgate {instance}: serving federations {}",
        config.served_federations().join(", ")
    );
    Ok(Some(broker))
}

/// The WebSocket edge.
async fn start_edge(config: &Config, gate: &Arc<Gate>, instance: &str) -> anyhow::Result<Edge> {
    let dispatcher = Dispatcher::connect(config, gate.clone(), instance)
        .await
        .map_err(|e| anyhow::anyhow!("edge: {e}"))?;
    let edge = Edge::start(config, dispatcher).await?;
    tracing::info!(target: STATUS, "fedgate {instance}: edge on {}", edge.ws_url());
    Ok(edge)
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}
