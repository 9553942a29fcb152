//! Catalogue and runner tests, with scripted fake registries (no network).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::watch;

use crate::*;

fn se(host: &str) -> htnn_proto::istio::networking::v1alpha3::ServiceEntry {
    htnn_proto::istio::networking::v1alpha3::ServiceEntry {
        hosts: vec![host.to_string()],
        ..Default::default()
    }
}

/// Publishes the hosts named in its config (a list of strings) on start and reload;
/// records calls. With `hang`, start never returns.
struct Fake {
    hang: bool,
    sink: Option<Sink>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn publish(&self, config: &Config) {
        let hosts = config.downcast_ref::<Vec<String>>().unwrap();
        let sink = self.sink.as_ref().unwrap();
        sink.set_listed(hosts.clone());
        for h in hosts {
            sink.apply(h, Some(se(h)));
        }
    }
}

impl Registry for Fake {
    fn start(&mut self, config: Config, sink: Sink) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push("start".into());
            if self.hang {
                futures::future::pending::<()>().await;
            }
            if config.downcast_ref::<Vec<String>>().is_none() {
                return Err(RegistryError::new("bad config"));
            }
            self.sink = Some(sink);
            self.publish(&config);
            Ok(())
        })
    }
    fn reload(&mut self, config: Config) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push("reload".into());
            self.publish(&config);
            Ok(())
        })
    }
    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.calls.lock().unwrap().push("stop".into()) })
    }
}

fn fake(hang: bool) -> (Box<dyn Registry>, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let r = Fake {
        hang,
        sink: None,
        calls: calls.clone(),
    };
    (Box::new(r), calls)
}

fn hosts_of(cfg: &[&str]) -> Config {
    Config::new(cfg.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

async fn wait_for<T: Clone>(rx: &mut watch::Receiver<T>, ok: impl Fn(&T) -> bool) -> T {
    let v = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| ok(v)))
        .await
        .expect("timed out")
        .expect("sender gone");
    v.clone()
}

fn keys(e: &Entries) -> Vec<&str> {
    e.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn lifecycle_start_reload_stop() {
    let (r, calls) = fake(false);
    let h = RegistryHandle::spawn("r1", r, hosts_of(&["a", "b"]), 1);
    assert_eq!(h.name(), "r1");
    wait_for(&mut h.status(), |s| *s == Status::Running { generation: 1 }).await;
    assert_eq!(keys(&h.entries().borrow()), ["a", "b"]);

    // b leaves the listing: soft-deleted until the reload succeeds, then purged.
    h.reload(hosts_of(&["a", "c"]), 2);
    wait_for(&mut h.status(), |s| *s == Status::Running { generation: 2 }).await;
    assert_eq!(keys(&h.entries().borrow()), ["a", "c"]);

    let mut entries = h.entries();
    let mut status = h.status();
    h.stop(Duration::from_secs(5)).await;
    assert!(entries.borrow_and_update().is_empty());
    assert_eq!(*status.borrow_and_update(), Status::Stopped);
    assert_eq!(*calls.lock().unwrap(), ["start", "reload", "stop"]);
}

#[tokio::test]
async fn failed_start_is_invalid_and_the_next_generation_starts_again() {
    let (r, calls) = fake(false);
    let h = RegistryHandle::spawn("r", r, Config::new(0u8), 1);
    let s = wait_for(&mut h.status(), |s| matches!(s, Status::Invalid { .. })).await;
    assert_eq!(
        s,
        Status::Invalid {
            generation: 1,
            reason: "bad config".into()
        }
    );
    h.reload(hosts_of(&["a"]), 2);
    wait_for(&mut h.status(), |s| *s == Status::Running { generation: 2 }).await;
    assert_eq!(*calls.lock().unwrap(), ["start", "start"]);
    h.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_hung_registry_blocks_nobody_and_can_be_stopped() {
    let (hung, _) = fake(true);
    let (ok, _) = fake(false);
    let stuck = RegistryHandle::spawn("stuck", hung, hosts_of(&["x"]), 1);
    let fine = RegistryHandle::spawn("fine", ok, hosts_of(&["a"]), 1);
    wait_for(&mut fine.status(), |s| {
        *s == Status::Running { generation: 1 }
    })
    .await;
    assert_eq!(*stuck.status().borrow(), Status::Starting { generation: 1 });
    // Reloads queue up behind the hang without blocking the caller.
    stuck.reload(hosts_of(&["y"]), 2);
    stuck.reload(hosts_of(&["z"]), 3);
    let entries = stuck.entries();
    tokio::time::timeout(
        Duration::from_secs(5),
        stuck.stop(Duration::from_millis(50)),
    )
    .await
    .expect("stop must not wait for the hung registry");
    assert!(entries.borrow().is_empty());
    fine.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn sink_health_and_late_updates_after_stop() {
    let (r, _) = fake(false);
    let h = RegistryHandle::spawn("r", r, hosts_of(&[]), 1);
    wait_for(&mut h.status(), |s| matches!(s, Status::Running { .. })).await;
    // Drive the sink as a client would, through a fresh one (the Fake keeps its own).
    let (sink, entries, mut health) = Sink::new();
    sink.degraded("connection refused");
    let Health::Degraded { since, reason } = health.borrow_and_update().clone() else {
        panic!("not degraded")
    };
    assert_eq!(reason, "connection refused");
    sink.degraded("timeout");
    assert!(matches!(&*health.borrow_and_update(),
        Health::Degraded { since: s, reason } if *s == since && reason == "timeout"));
    sink.recovered();
    assert_eq!(*health.borrow_and_update(), Health::Ok);

    assert_eq!(sink.apply("a", Some(se("a"))), Change::Added);
    assert_eq!(sink.apply("a", Some(se("a"))), Change::Unchanged);
    sink.close();
    assert_eq!(sink.apply("b", Some(se("b"))), Change::Unchanged);
    assert!(entries.borrow().is_empty());
    h.stop(Duration::from_secs(5)).await;
}

#[test]
fn catalogue_validates_by_type() {
    let c = Catalogue::builtin();
    assert_eq!(c.names().collect::<Vec<_>>(), ["consul", "nacos"]);
    let (t, cfg) = c
        .validate("nacos", &json!({"version": "v2", "serverUrl": "http://n"}))
        .unwrap();
    assert_eq!(t.name, "nacos");
    assert_eq!(
        cfg.downcast_ref::<NacosConfig>().unwrap().version,
        NacosVersion::V2
    );
    assert!(
        c.validate("consul", &json!({"serverUrl": "http://c"}))
            .unwrap()
            .1
            .downcast_ref::<ConsulConfig>()
            .is_some()
    );
    assert_eq!(
        c.validate("eureka", &json!({})).unwrap_err().to_string(),
        "type: unknown registry type \"eureka\" (known: consul, nacos)"
    );
    assert_eq!(
        c.validate("nacos", &json!({"serverUrl": "http://n"}))
            .unwrap_err()
            .field,
        "config.version"
    );
}

#[test]
fn third_party_types_register_and_replacement_is_explicit() {
    fn validate(v: &serde_json::Value) -> Result<Config, FieldError> {
        Ok(Config::new(v.to_string()))
    }
    let t = RegistryType {
        name: "static".into(),
        validate,
        create: Arc::new(|_| fake(false).0),
    };
    let mut c = Catalogue::builtin();
    c.register(t.clone()).unwrap();
    assert_eq!(
        c.register(t.clone()).unwrap_err(),
        AlreadyRegistered("static".into())
    );
    let nacos = RegistryType {
        name: "nacos".into(),
        ..t.clone()
    };
    assert!(c.register(nacos.clone()).is_err());
    assert!(c.replace(nacos).is_some());
    assert_eq!(
        c.validate("nacos", &json!({"x": 1})).unwrap().1,
        Config::new(r#"{"x":1}"#.to_string())
    );
}

#[tokio::test]
async fn builtin_clients_report_not_implemented() {
    let c = Catalogue::builtin();
    let (t, cfg) = c
        .validate("consul", &json!({"serverUrl": "http://c"}))
        .unwrap();
    let h = RegistryHandle::spawn("r", (t.create)("r"), cfg, 4);
    let s = wait_for(&mut h.status(), |s| matches!(s, Status::Invalid { .. })).await;
    assert_eq!(
        s,
        Status::Invalid {
            generation: 4,
            reason: "the consul client is not implemented yet".into()
        }
    );
    h.stop(Duration::from_secs(5)).await;
}
