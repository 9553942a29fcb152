//! Kubernetes mode end to end: real kube-apiserver + etcd with istio's CRDs and ours,
//! `kubectl apply` of the objects of `examples/config`, `htnn serve --kubeconfig` → unmodified
//! istiod → Envoy 1.40 with `libhtnn.so`.
//!
//! Needs the binaries of `tests/gateway.rs`, plus `kubectl` (`HTNN_KUBECTL_BIN`, built by
//! `make kube`) and the istio Go module in the module cache (for istio's CRDs; the istiod
//! build puts it there). One environment at a time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use htnn_integration::certs::SelfSigned;
use htnn_integration::env::{EnvOptions, KubeMode, TestEnv};
use htnn_integration::gateway::{DEMO_HOST, Echoed, GatewayEnv, examples_config_dir, public_hello};
use htnn_integration::kubectl::Kubectl;
use htnn_integration::{free_ports, loopback, poll_until, race};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How fast a policy change must change what Envoy does.
const PROPAGATION: Duration = Duration::from_secs(3);
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// The lease duration the replicas run with: short, so that failover is quick to test.
const LEASE: Duration = Duration::from_secs(4);
const RICK: (&str, &str) = ("x-api-key", "rick-secret");
const WEBHOOK_CONFIG: &str = "htnn-test-webhook";

fn kube_mode(extra: &[&str]) -> KubeMode {
    let mut htnn_args = vec![
        "--lease-duration".to_string(),
        format!("{}s", LEASE.as_secs()),
    ];
    htnn_args.extend(extra.iter().map(|s| s.to_string()));
    KubeMode {
        htnn_args,
        ..KubeMode::default()
    }
}

async fn get(gw: &GatewayEnv, path: &str, headers: &[(&str, &str)]) -> (u16, Option<Echoed>) {
    let r = gw
        .get(DEMO_HOST, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    (r.status, Echoed::of(&r))
}

/// The `Accepted` condition of an HTNN object, as `kubectl get -o json` shows it.
async fn accepted(kubectl: &Kubectl, resource: &str, name: &str) -> anyhow::Result<Option<Value>> {
    let v = kubectl.get_json(&[resource, name, "-n", "default"]).await?;
    Ok(v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .cloned())
}

/// Waits until `name`'s condition has `reason` (and, if given, observedGeneration).
async fn wait_reason(
    kubectl: &Kubectl,
    resource: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> (Value, Duration) {
    poll_until(timeout, Duration::from_millis(100), || async {
        let c = accepted(kubectl, resource, name).await?;
        Ok(match c {
            Some(c) if c["reason"] == reason => Ok(c),
            other => Err(format!("{resource} {name}: {other:?}")),
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{resource} {name} never became {reason}: {e:#}"))
}

fn policies() -> String {
    std::fs::read_to_string(examples_config_dir().join("30-policies.yaml")).unwrap()
}

/// `orders-auth` with consumerRestriction's `denyIfNoConsumer: maybe` (not a bool).
fn broken_orders_auth() -> String {
    let all = policies();
    let orders = all.split("\n---").next().unwrap().to_string();
    let broken = orders.replacen("denyIfNoConsumer: true", "denyIfNoConsumer: maybe", 1);
    assert_ne!(broken, orders, "30-policies.yaml changed shape");
    broken
}

fn webhook_configuration(addr: SocketAddr, ca_bundle: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: {WEBHOOK_CONFIG}}}
webhooks:
- name: validation.htnn.mosn.io
  clientConfig: {{url: "https://{addr}/validate", caBundle: "{ca_bundle}"}}
  rules:
  - {{apiGroups: [htnn.mosn.io], apiVersions: ["*"], operations: [CREATE, UPDATE], resources: ["*"]}}
  - {{apiGroups: [networking.istio.io], apiVersions: ["*"], operations: [CREATE, UPDATE], resources: [virtualservices, gateways]}}
  failurePolicy: Fail
  matchPolicy: Equivalent
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 10
"#
    )
}

/// Waits until `/public` carries `header` (and, if given, no longer `gone`).
async fn wait_public_header(gw: &GatewayEnv, header: Option<&str>, gone: Option<&str>) -> Duration {
    let (_, took) = poll_until(PROPAGATION, PROBE_INTERVAL, || async {
        let r = gw.get(DEMO_HOST, "/public", &[]).await?;
        Ok(match Echoed::of(&r) {
            Some(e)
                if header.is_none_or(|h| e.header(h).is_some())
                    && gone.is_none_or(|g| e.header(g).is_none()) =>
            {
                Ok(())
            }
            Some(e) => Err(format!("backend saw {:?}", e.headers)),
            None => Err(format!("{}: {}", r.status, r.text())),
        })
    })
    .await
    .unwrap_or_else(|e| panic!("/public never had {header:?} without {gone:?}: {e:#}"));
    took
}

/// Number of objects htnn serves (from `/debug/snapshot`).
async fn served_objects(env: &TestEnv) -> usize {
    let v = env
        .htnn()
        .get("/debug/snapshot")
        .await
        .unwrap()
        .json()
        .unwrap();
    v["types"]
        .as_object()
        .map(|types| {
            types
                .values()
                .map(|t| t["objects"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

/// The demo through `kubectl apply`: the plugins' behaviour, statuses in `kubectl get`, the
/// webhook, the webhook down, edits and deletes, an htnn restart and a kube-apiserver restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_drives_the_gateway() {
    let _serial = SERIAL.lock().await;
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = SelfSigned::generate(certs_dir.path(), "webhook").unwrap();
    let webhook_addr = loopback(free_ports(1).unwrap()[0]);
    let webhook_flags = [
        "--webhook-addr".to_string(),
        webhook_addr.to_string(),
        "--tls-cert".to_string(),
        certs.cert.display().to_string(),
        "--tls-key".to_string(),
        certs.key.display().to_string(),
    ];
    let flags: Vec<&str> = webhook_flags.iter().map(String::as_str).collect();
    let mut gw = GatewayEnv::start_kubernetes(kube_mode(&flags))
        .await
        .unwrap_or_else(|e| panic!("starting the Kubernetes gateway environment: {e:#}"));
    println!(
        "environment ready after {:?}; htnn serve ready {:?} after start, RSS {:?} KiB",
        gw.ready_after,
        gw.env.htnn().ready_after,
        gw.env.htnn().rss_kib()
    );

    // The demo's plugins, as in file mode.
    let (status, seen) = get(&gw, "/public", &[]).await;
    assert_eq!(status, 200);
    let greeting = seen.unwrap().header("x-greeting").map(str::to_string);
    assert!(
        greeting.as_deref().is_some_and(|g| g.starts_with("hello")),
        "{greeting:?}"
    );
    assert_eq!(get(&gw, "/orders", &[]).await.0, 401);
    let (status, seen) = get(&gw, "/orders", &[RICK]).await;
    assert_eq!(status, 200);
    assert_eq!(seen.unwrap().header("x-greeting"), Some("hello, rick"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(get(&gw, "/orders", &[RICK]).await.0);
    }
    assert!(
        statuses.contains(&429),
        "limitReq never limited: {statuses:?}"
    );

    // Statuses, written back by the lease holder, in `kubectl get`.
    let kubectl = gw.env.kubectl().clone();
    for name in ["orders-auth", "public-hello"] {
        let (c, took) = wait_reason(
            &kubectl,
            "filterpolicies",
            name,
            "Accepted",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(c["status"], "True");
        assert_eq!(c["observedGeneration"], 1);
        println!("{name}: Accepted visible after {took:?} more");
    }
    for name in ["rick", "morty"] {
        wait_reason(
            &kubectl,
            "consumers.htnn.mosn.io",
            name,
            "Accepted",
            Duration::from_secs(10),
        )
        .await;
    }
    let table = kubectl
        .run_ok(&["get", "fp", "-n", "default"])
        .await
        .unwrap();
    println!("$ kubectl get fp\n{table}");
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("ACCEPTED") && header.contains("REASON"),
        "{table}"
    );
    assert!(table.lines().skip(1).all(|l| l.contains("True")), "{table}");

    // The webhook refuses invalid objects with the field named.
    let config = webhook_configuration(webhook_addr, &certs.ca_bundle().unwrap());
    kubectl.apply_stdin(&config).await.unwrap();
    let broken = broken_orders_auth();
    let (refusal, took) = poll_until(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            Ok(match kubectl.apply_stdin(&broken).await {
                Err(e) => Ok(format!("{e:#}")),
                Ok(out) => {
                    // Accepted before the webhook was active: put the good one back, retry.
                    kubectl.apply_stdin(&policies()).await?;
                    Err(format!("applied: {out}"))
                }
            })
        },
    )
    .await
    .unwrap_or_else(|e| panic!("the webhook never refused a broken policy: {e:#}"));
    println!("webhook active after {took:?}; refusal: {refusal}");
    assert!(refusal.contains("denied the request"), "{refusal}");
    assert!(refusal.contains("denyIfNoConsumer"), "{refusal}");
    let bad_vs = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-vs, namespace: default}
spec:
  hosts: [bad.demo.local]
  http: [{timeoutt: 5s, route: [{destination: {host: backend.demo.internal}}]}]
";
    let e = kubectl.apply_stdin(bad_vs).await.unwrap_err();
    assert!(format!("{e:#}").contains("timeoutt"), "{e:#}");
    let bad_annotation = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: annotated
  namespace: default
  annotations:
    htnn.mosn.io/filterpolicy: '{\"spec\":{\"filters\":{\"limitReq\":{\"config\":{\"average\":\"lots\"}}}}}'
spec:
  hosts: [annotated.demo.local]
  http: [{route: [{destination: {host: backend.demo.internal}}]}]
";
    let e = kubectl.apply_stdin(bad_annotation).await.unwrap_err();
    assert!(format!("{e:#}").contains("average"), "{e:#}");
    // The policy protecting /orders is still the good one.
    assert_eq!(get(&gw, "/orders", &[]).await.0, 401);

    // Webhook down: the broken policy gets in, is Invalid, and /orders keeps its protection.
    kubectl
        .run_ok(&["delete", "validatingwebhookconfiguration", WEBHOOK_CONFIG])
        .await
        .unwrap();
    poll_until(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            Ok(match kubectl.apply_stdin(&broken).await {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("{e:#}")),
            })
        },
    )
    .await
    .unwrap_or_else(|e| panic!("the broken policy never got past the removed webhook: {e:#}"));
    let (c, took) = wait_reason(
        &kubectl,
        "filterpolicies",
        "orders-auth",
        "Invalid",
        Duration::from_secs(10),
    )
    .await;
    println!(
        "broken orders-auth Invalid in its status after {took:?}: {}",
        c["message"]
    );
    assert_eq!(c["status"], "False");
    assert_eq!(c["observedGeneration"], 2);
    let message = c["message"].as_str().unwrap_or_default();
    assert!(message.contains("denyIfNoConsumer"), "{message}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get(&gw, "/orders", &[]).await.0,
        401,
        "the last valid policy stopped serving"
    );
    assert_eq!(get(&gw, "/orders", &[RICK]).await.0, 200);
    kubectl.apply_stdin(&policies()).await.unwrap();
    wait_reason(
        &kubectl,
        "filterpolicies",
        "orders-auth",
        "Accepted",
        Duration::from_secs(10),
    )
    .await;

    // Edits and deletes change behaviour within 3 s.
    let t = Instant::now();
    kubectl
        .apply_stdin(&public_hello("x-edited"))
        .await
        .unwrap();
    let took = wait_public_header(&gw, Some("x-edited"), Some("x-greeting")).await;
    println!(
        "edit reached Envoy {:?} after kubectl apply returned ({:?} from its start)",
        took,
        t.elapsed()
    );
    let t = Instant::now();
    kubectl
        .delete("filterpolicies", "default", "public-hello")
        .await
        .unwrap();
    wait_public_header(&gw, None, Some("x-edited")).await;
    println!(
        "delete reached Envoy {:?} after kubectl delete started",
        t.elapsed()
    );

    // htnn restarted: istiod keeps its config meanwhile, nothing is deleted, and what changed
    // while htnn was down is picked up.
    let before = served_objects(&gw.env).await;
    gw.env.kill_htnn();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get(&gw, "/orders", &[]).await.0,
        401,
        "istiod lost the policy with htnn down"
    );
    assert_eq!(
        get(&gw, "/orders", &[RICK]).await.0,
        200,
        "istiod lost the route with htnn down"
    );
    kubectl
        .apply_stdin(&public_hello("x-while-down"))
        .await
        .unwrap();
    gw.env.restart_htnn().await.unwrap();
    wait_public_header(&gw, Some("x-while-down"), None).await;
    assert_eq!(get(&gw, "/orders", &[]).await.0, 401);
    assert_eq!(
        served_objects(&gw.env).await,
        before,
        "objects lost or duplicated by the restart"
    );

    // kube-apiserver restarted: the watches resume, nothing lost or duplicated.
    gw.env.kube.restart_apiserver().await.unwrap();
    let t = Instant::now();
    poll_until(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            Ok(
                match kubectl
                    .apply_stdin(&public_hello("x-after-apiserver-restart"))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("{e:#}")),
                },
            )
        },
    )
    .await
    .unwrap();
    let (_, took) = poll_until(Duration::from_secs(30), PROBE_INTERVAL, || async {
        let r = gw.get(DEMO_HOST, "/public", &[]).await?;
        Ok(match Echoed::of(&r) {
            Some(e) if e.header("x-after-apiserver-restart").is_some() => Ok(()),
            _ => Err(format!("{}: {}", r.status, r.text())),
        })
    })
    .await
    .unwrap_or_else(|e| panic!("no change reached Envoy after the apiserver restart: {e:#}"));
    println!(
        "after the apiserver restart, an edit reached Envoy {took:?} after it was applied ({:?} after the restart)",
        t.elapsed()
    );
    assert_eq!(
        served_objects(&gw.env).await,
        before,
        "objects lost or duplicated by the apiserver restart"
    );
    assert_eq!(get(&gw, "/orders", &[]).await.0, 401);
}

/// A VirtualService and its policy applied in one `kubectl apply` never serve a request
/// without the policy (the staged push of the file mode holds here too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_and_policy_in_one_kubectl_apply_never_unprotected() {
    let _serial = SERIAL.lock().await;
    let gw = GatewayEnv::start_kubernetes(kube_mode(&[]))
        .await
        .unwrap_or_else(|e| panic!("starting the Kubernetes gateway environment: {e:#}"));
    race::run(&gw, race::Writer::Kubectl, 20).await;
}

/// Two replicas: both serve, only the lease holder writes statuses; killed, the other takes
/// over within the lease duration (plus one renewal period) and writes what is pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_replica_writes_statuses_when_the_leader_dies() {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::start_with(EnvOptions {
        seed_dir: Some(examples_config_dir()),
        kubernetes: Some(kube_mode(&["--identity", "replica-a"])),
        ..EnvOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("starting the environment: {e:#}"));
    let replica = env.start_replica("replica-b").await.unwrap();
    let kubectl = env.kubectl().clone();
    wait_reason(
        &kubectl,
        "filterpolicies",
        "orders-auth",
        "Accepted",
        Duration::from_secs(10),
    )
    .await;

    let writer = |v: Value| v["statusWriter"].clone();
    let a = writer(
        env.htnn()
            .get("/debug/status")
            .await
            .unwrap()
            .json()
            .unwrap(),
    );
    let b = writer(replica.get("/debug/status").await.unwrap().json().unwrap());
    println!("replica-a: {a}\nreplica-b: {b}");
    assert_eq!(
        a["leading"], true,
        "the first replica should hold the lease: {a}"
    );
    assert_eq!(b["leading"], false, "{b}");
    assert_eq!(b["holder"], "replica-a");
    // Both are ready and serve.
    assert_eq!(replica.get("/readyz").await.unwrap().status, 200);

    // The leader dies without releasing the lease; a policy applied now must get its status
    // from the other replica.
    env.kill_htnn();
    let killed = Instant::now();
    let policy = public_hello("x-failover").replace("public-hello", "failover-policy");
    kubectl.apply_stdin(&policy).await.unwrap();
    let (c, _) = wait_reason(
        &kubectl,
        "filterpolicies",
        "failover-policy",
        "Accepted",
        LEASE * 3,
    )
    .await;
    let took = killed.elapsed();
    println!(
        "after the leader was killed, replica-b wrote the pending status after {took:?} (lease {LEASE:?}): {c}"
    );
    assert!(
        took <= LEASE + LEASE / 3 + Duration::from_secs(2),
        "failover took {took:?}"
    );
    let b = writer(replica.get("/debug/status").await.unwrap().json().unwrap());
    assert_eq!(b["leading"], true, "{b}");
}

/// A WasmPlugin CRD that serves only a version istiod does not read.
const WASMPLUGIN_V9_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: wasmplugins.extensions.istio.io}
spec:
  group: extensions.istio.io
  names: {kind: WasmPlugin, plural: wasmplugins, singular: wasmplugin, listKind: WasmPluginList}
  scope: Namespaced
  versions:
  - name: v9
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
";

/// With no istio CRDs installed, htnn is ready (the absent kinds count as empty; so does a
/// kind whose CRD lacks the version istiod reads); once they are installed, their objects are
/// served without a restart. With `--namespace default`, objects of other namespaces are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_whose_crd_appears_later_are_picked_up() {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::start_with(EnvOptions {
        kubernetes: Some(KubeMode {
            without_istio_crds: true,
            before_start: vec![WASMPLUGIN_V9_CRD.into()],
            ..kube_mode(&["--namespace", "default"])
        }),
        ..EnvOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("starting the environment: {e:#}"));
    let kubectl = env.kubectl().clone();
    // Ready (or start_with would have failed), and it says why WasmPlugins are not served.
    let log = std::fs::read_to_string(env.htnn().log_path()).unwrap();
    assert!(
        log.contains("does not serve the version istiod reads"),
        "{log}"
    );
    kubectl
        .run_ok(&["delete", "crd", "wasmplugins.extensions.istio.io"])
        .await
        .unwrap();
    env.kube
        .install_crds(
            &kubectl,
            &htnn_integration::kube::istio_crds_file().unwrap(),
        )
        .await
        .unwrap();
    let routes = std::fs::read_to_string(examples_config_dir().join("20-routes.yaml")).unwrap();
    let elsewhere = routes.replace("namespace: default", "namespace: elsewhere");
    assert_ne!(routes, elsewhere, "20-routes.yaml changed shape");
    kubectl
        .run_ok(&["create", "namespace", "elsewhere"])
        .await
        .unwrap();
    let t = Instant::now();
    kubectl
        .apply_stdin(&format!("{routes}\n---\n{elsewhere}"))
        .await
        .unwrap();
    let key = htnn_integration::corpus::ObjectKey::new("VirtualService", "default", "api");
    // What istiod must get is the object as stored, annotations by kubectl included.
    let written = &kubectl
        .get_json(&[
            "virtualservices.networking.istio.io",
            "api",
            "-n",
            "default",
        ])
        .await
        .unwrap();
    htnn_integration::check::wait_for_object(&env.istiod, &key, written, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the VirtualService never reached istiod: {e:#}\n{}",
                env.logs()
            )
        });
    println!(
        "VirtualService applied after its CRD appeared reached istiod after {:?}",
        t.elapsed()
    );
    // Applied together with it: had it been watched, it would be there by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let configz = env.istiod.configz().await.unwrap();
    let other = htnn_integration::corpus::ObjectKey::new("VirtualService", "elsewhere", "api");
    assert!(
        !configz.contains_key(&other),
        "--namespace default served {other}"
    );
}
