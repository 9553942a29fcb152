//! Leader election with a `coordination.k8s.io/v1` Lease, for the one job only one replica
//! may do: writing statuses. Every replica watches and serves istiod regardless.
//!
//! The rules are client-go's: the holder renews every third of the lease duration; another
//! replica takes the lease over when its record (holder, renew time, transitions) has not
//! changed for a whole lease duration *as observed by its own clock*, so clock skew between
//! replicas does not matter. Writes are optimistic (resourceVersion), so two candidates
//! cannot both win. A holder that cannot renew steps down after two thirds of the duration,
//! before anyone else may take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

/// What `/debug/status` shows about the election.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leadership {
    pub identity: String,
    pub leading: bool,
    /// The holder as last read from the Lease.
    pub holder: Option<String>,
    pub lease: String,
}

/// The fields whose change proves the holder alive.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    renew: Option<Timestamp>,
    transitions: i32,
}

fn record(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        renew: spec.renew_time.map(|t| t.0),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// Campaigns for the lease forever, publishing [`Leadership`] on every change.
pub async fn run(client: kube::Client, cfg: LeaseConfig, tx: watch::Sender<Leadership>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let period = cfg.duration / 3;
    let mut observed: Option<(Record, Instant)> = None;
    let mut last_renew: Option<Instant> = None;
    let lease_name = format!("{}/{}", cfg.namespace, cfg.name);
    loop {
        let outcome = tick(&api, &cfg, &mut observed).await;
        let (leading, holder) = match outcome {
            Ok((leading, holder)) => {
                if leading {
                    last_renew = Some(Instant::now());
                }
                (leading, holder)
            }
            Err(e) => {
                let was = tx.borrow().leading;
                // Keep leading through a short outage, but stop before anyone may take over.
                let still = was && last_renew.is_some_and(|t| t.elapsed() < cfg.duration * 2 / 3);
                warn!(lease = %lease_name, error = %e, leading = still, "lease renewal failed");
                (still, tx.borrow().holder.clone())
            }
        };
        let next = Leadership {
            identity: cfg.identity.clone(),
            leading,
            holder,
            lease: lease_name.clone(),
        };
        tx.send_if_modified(|cur| {
            if *cur == next {
                return false;
            }
            if cur.leading != next.leading {
                if next.leading {
                    info!(lease = %lease_name, identity = %cfg.identity, "became the status writer");
                } else {
                    info!(lease = %lease_name, holder = ?next.holder, "not the status writer");
                }
            }
            *cur = next;
            true
        });
        tokio::time::sleep(period).await;
    }
}

/// One round: create, renew or take over the lease. Returns whether we hold it, and who does.
async fn tick(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Option<(Record, Instant)>,
) -> Result<(bool, Option<String>), kube::Error> {
    let now = MicroTime(Timestamp::now());
    let seconds = i32::try_from(cfg.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok((true, Some(cfg.identity.clone()))),
            // Someone created it first.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok((false, None)),
            Err(e) => Err(e),
        };
    };
    let rec = record(&lease);
    if observed.as_ref().is_none_or(|(r, _)| *r != rec) {
        *observed = Some((rec.clone(), Instant::now()));
    }
    let spec = lease.spec.get_or_insert_with(Default::default);
    let ours = rec.holder.as_deref() == Some(cfg.identity.as_str());
    if !ours {
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(0),
        );
        let expired = observed
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= held_for);
        if rec.holder.is_some() && !expired {
            return Ok((false, rec.holder));
        }
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(rec.transitions + 1);
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(seconds);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok((true, Some(cfg.identity.clone()))),
        // Changed since we read it: someone else renewed or took it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok((false, rec.holder)),
        Err(e) => Err(e),
    }
}

/// Gives the lease up (on shutdown), so another replica takes over at once.
pub async fn release(client: kube::Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => info!(lease = %cfg.name, "released the status-writer lease"),
        Err(e) => warn!(lease = %cfg.name, error = %e, "could not release the lease"),
    }
}
