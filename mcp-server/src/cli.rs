//! Command line of the `htnn` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// htnn: API-gateway plugins for stock istio gateways.
///
/// `htnn serve` is an MCP-over-xDS config source for an unmodified istiod
/// (meshConfig.configSources: [{address: "xds://<host>:15051"}]). It serves your istio objects
/// exactly as written, plus the config generated from HTNN resources (htnn.mosn.io/v1).
#[derive(Debug, Parser)]
#[command(name = "htnn", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve istiod over MCP from a directory of YAML/JSON files and/or a Kubernetes cluster.
    Serve(Box<ServeArgs>),
    /// Load a directory like `serve` would and report every invalid object; exits 1 if any.
    Validate(ValidateArgs),
    /// Print, as YAML, the istio objects `serve` would generate or change for a directory,
    /// and the status of every HTNN object.
    Translate(TranslateArgs),
    /// Print the htnn.mosn.io/v1 CustomResourceDefinitions (what deploy/crds.yaml holds).
    Crds,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of Kubernetes-style YAML/JSON files (multi-document) holding istio and HTNN
    /// objects. Watched: changes are applied after --debounce. May be combined with
    /// --kubernetes: an object both define is served from Kubernetes (the file's copy is
    /// ignored while the Kubernetes one exists, and a warning is logged).
    #[arg(long, env = "HTNN_CONFIG_DIR", value_name = "DIR", required_unless_present_any = ["kubernetes", "kubeconfig"])]
    pub config_dir: Option<PathBuf>,

    #[command(flatten)]
    pub kube: KubeArgs,

    /// Address of the MCP/ADS gRPC server istiod connects to.
    #[arg(long, env = "HTNN_XDS_ADDR", default_value = "127.0.0.1:15051")]
    pub xds_addr: SocketAddr,

    /// Address of the admin HTTP server: /healthz, /readyz, /metrics, /debug/snapshot, /debug/status,
    /// /debug/connections.
    #[arg(long, env = "HTNN_ADMIN_ADDR", default_value = "127.0.0.1:15052")]
    pub admin_addr: SocketAddr,

    /// Quiet period after a change (a file event, a Kubernetes watch event) before it is
    /// applied, so that what is written together is served together: a `kubectl apply` of a
    /// VirtualService and its policy creates them one by one. A change waits at most ten
    /// times this (at least 1s) for the ones that follow it.
    #[arg(long, env = "HTNN_DEBOUNCE", default_value = "100ms", value_parser = parse_duration)]
    pub debounce: Duration,

    /// Full rescan of the directory at this interval, in case a file event was missed
    /// (e.g. on network filesystems).
    #[arg(long, env = "HTNN_RESYNC_PERIOD", default_value = "10s", value_parser = parse_duration)]
    pub resync_period: Duration,

    /// istio's meshConfig.rootNamespace. Generated EnvoyFilters are placed there so that they
    /// reach gateways in every namespace.
    #[arg(long, env = "HTNN_ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,

    /// A change that spans several kinds is pushed in stages (services, then EnvoyFilters,
    /// then routes; the reverse on removal). After istiod ACKs a stage, wait this long before
    /// the next one, so that istiod has processed e.g. a policy before the route it protects.
    #[arg(long, env = "HTNN_PUSH_SETTLE", default_value = "100ms", value_parser = parse_duration)]
    pub push_settle: Duration,

    /// Push the next stage anyway when istiod has not ACKed the previous one after this long.
    #[arg(long, env = "HTNN_ACK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub ack_timeout: Duration,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Kubernetes mode.
#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Watch the five htnn.mosn.io kinds and the 15 istio kinds istiod reads in a Kubernetes
    /// cluster (in-cluster config, or --kubeconfig / $KUBECONFIG). Nothing is served before
    /// every kind finished its initial list; a kind whose CRD is not installed counts as empty
    /// until the CRD appears. The holder of the --lease-name Lease writes the `Accepted`
    /// condition of every HTNN object back to its status.
    #[arg(long, env = "HTNN_KUBERNETES")]
    pub kubernetes: bool,

    /// kubeconfig file to use instead of the in-cluster config (implies --kubernetes).
    /// Without it, --kubernetes uses the in-cluster config, else $KUBECONFIG, else
    /// ~/.kube/config.
    #[arg(long, env = "HTNN_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "HTNN_WATCH_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// coordination.k8s.io Lease that elects the one replica writing statuses. Every replica
    /// watches and serves istiod.
    #[arg(long, env = "HTNN_LEASE_NAME", default_value = "htnn-status-writer")]
    pub lease_name: String,

    /// Namespace of the Lease (default: $POD_NAMESPACE, else istio-system).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a lease holder that stopped renewing keeps the lease; another replica takes
    /// over after at most this long. Renewed every third of it.
    #[arg(long, env = "HTNN_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// This replica's name in the Lease (default: $POD_NAME, else $HOSTNAME, else htnn-<pid>).
    #[arg(long, env = "HTNN_IDENTITY")]
    pub identity: Option<String>,

    /// Address of the validating admission webhook (HTTPS, path /validate). Needs --tls-cert
    /// and --tls-key.
    #[arg(long, env = "HTNN_WEBHOOK_ADDR", requires_all = ["tls_cert", "tls_key"])]
    pub webhook_addr: Option<SocketAddr>,

    /// PEM certificate chain of the webhook server; re-read when the file changes.
    #[arg(long, env = "HTNN_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the webhook server; re-read when the file changes.
    #[arg(long, env = "HTNN_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl KubeArgs {
    pub fn enabled(&self) -> bool {
        self.kubernetes || self.kubeconfig.is_some()
    }
}

#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// Directory to translate.
    #[arg(short = 'f', long = "filename", value_name = "DIR")]
    pub dir: PathBuf,

    /// istio's meshConfig.rootNamespace.
    #[arg(long, env = "HTNN_ROOT_NAMESPACE", default_value = "istio-system")]
    pub root_namespace: String,

    /// Print every served object, not only those translation generated or changed.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Directory to validate.
    #[arg(short = 'f', long = "filename", value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "HTNN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `info,htnn_mcp_server::xds=debug`.
    #[arg(long, env = "HTNN_LOG", default_value = "info")]
    pub log_level: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Durations as `100ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let nanos = htnn_proto::spec::parse_go_duration(s)?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| format!("{s}: must not be negative"))
}

pub fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}
