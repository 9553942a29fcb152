//! Kubernetes mode: watches of the HTNN and istio kinds, status written back by the lease
//! holder, the validating admission webhook, and the CRDs of our kinds.

pub mod crds;
pub mod lease;
mod status;
mod store;
pub mod watch;
pub mod webhook;

use anyhow::Context;

use crate::cli::KubeArgs;
use lease::LeaseConfig;

/// The Kubernetes client `--kubeconfig` (or the in-cluster config, or `$KUBECONFIG`) names.
pub async fn client(args: &KubeArgs) -> anyhow::Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "--kubernetes: no in-cluster config, $KUBECONFIG or ~/.kube/config (give --kubeconfig)",
        )?,
    };
    kube::Client::try_from(config).context("creating the Kubernetes client")
}

/// The status-writer election of this replica, from the flags and the pod environment.
pub fn lease_config(args: &KubeArgs) -> LeaseConfig {
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("htnn-{}", std::process::id()));
    LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| "istio-system".into()),
        identity,
        duration: args.lease_duration,
    }
}
