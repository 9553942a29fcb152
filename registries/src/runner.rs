//! Drives one registry in its own task. Commands travel through a `watch` channel, so
//! reloads that arrive while the registry is busy collapse into the latest one, and the
//! handle never waits for the task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Config;
use crate::registry::{Health, Registry, Sink};
use crate::state::Entries;

/// Lifecycle of one ServiceRegistry; `generation` is the object's `metadata.generation`
/// the state refers to, for its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Starting {
        generation: i64,
    },
    /// Accepted.
    Running {
        generation: i64,
    },
    /// Start or reload failed: not retried until the spec changes.
    Invalid {
        generation: i64,
        reason: String,
    },
    Stopped,
}

#[derive(Clone)]
enum Desired {
    Run { config: Config, generation: i64 },
    Stop,
}

pub struct RegistryHandle {
    name: String,
    desired: watch::Sender<Desired>,
    status: watch::Receiver<Status>,
    entries: watch::Receiver<Arc<Entries>>,
    health: watch::Receiver<Health>,
    sink: Sink,
    task: JoinHandle<()>,
}

impl RegistryHandle {
    /// Spawns the registry's task on the current tokio runtime and starts it.
    pub fn spawn(
        name: impl Into<String>,
        registry: Box<dyn Registry>,
        config: Config,
        generation: i64,
    ) -> Self {
        let name = name.into();
        let (sink, entries, health) = Sink::new();
        let (desired, desired_rx) = watch::channel(Desired::Run { config, generation });
        let (status_tx, status) = watch::channel(Status::Starting { generation });
        let span = tracing::info_span!("registry", name = %name);
        let task = tokio::spawn(tracing::Instrument::instrument(
            drive(registry, sink.clone(), desired_rx, status_tx),
            span,
        ));
        Self {
            name,
            desired,
            status,
            entries,
            health,
            sink,
            task,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new spec. Applied once the registry finishes what it is doing; an unchanged
    /// config still counts (HTNN reloads on every generation change).
    pub fn reload(&self, config: Config, generation: i64) {
        self.desired
            .send_replace(Desired::Run { config, generation });
    }

    /// Withdraws the entries at once (a hung registry must not keep serving after its
    /// ServiceRegistry is deleted), asks the registry to stop, and aborts it if it has
    /// not stopped within `grace`.
    pub async fn stop(self, grace: Duration) {
        self.sink.close();
        self.desired.send_replace(Desired::Stop);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!(registry = %self.name, "registry did not stop in time; aborted");
            abort.abort();
        }
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The registry's current host → ServiceEntry set, soft-deleted entries included.
    pub fn entries(&self) -> watch::Receiver<Arc<Entries>> {
        self.entries.clone()
    }

    pub fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }
}

async fn drive(
    mut registry: Box<dyn Registry>,
    sink: Sink,
    mut desired: watch::Receiver<Desired>,
    status: watch::Sender<Status>,
) {
    let mut started = false;
    let mut applied = None;
    loop {
        let want = desired.borrow_and_update().clone();
        match want {
            Desired::Stop => break,
            Desired::Run { generation, .. } if applied == Some(generation) => {}
            Desired::Run { config, generation } => {
                applied = Some(generation);
                status.send_replace(Status::Starting { generation });
                let result = if started {
                    registry.reload(config).await
                } else {
                    registry.start(config, sink.clone()).await
                };
                match result {
                    Ok(()) => {
                        if started {
                            sink.purge_soft_deleted();
                        }
                        started = true;
                        tracing::info!(generation, "registry running");
                        status.send_replace(Status::Running { generation });
                    }
                    Err(e) => {
                        tracing::warn!(generation, error = %e, "registry config rejected");
                        status.send_replace(Status::Invalid {
                            generation,
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        if desired.changed().await.is_err() {
            break; // the handle is gone
        }
    }
    if started {
        registry.stop().await;
    }
    sink.close();
    status.send_replace(Status::Stopped);
}
