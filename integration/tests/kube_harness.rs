//! The Kubernetes test harness itself: a cluster with istio's CRDs takes objects through
//! `kubectl`, and keeps them across an apiserver restart on the same address.
//!
//! Needs kube-apiserver, etcd and kubectl (`HTNN_KUBE_APISERVER_BIN`, `HTNN_ETCD_BIN`,
//! `HTNN_KUBECTL_BIN`; `make kube` builds all three) and the `go` command (to find istio's
//! CRDs in the Go module cache).

use std::time::{Duration, Instant};

use htnn_integration::kube::{Kube, istio_crds_file};
use htnn_integration::kubectl::Kubectl;
use htnn_integration::poll_until;

const VIRTUAL_SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: harness
  namespace: default
spec:
  hosts: [harness.demo.local]
  http:
  - name: all
    route:
    - destination: {host: backend.default.svc.cluster.local, port: {number: 8080}}
"#;

#[tokio::test]
async fn objects_survive_an_apiserver_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut kube = Kube::start_from_env(dir.path())
        .await
        .unwrap_or_else(|e| panic!("starting kube-apiserver: {e:#}"));
    let kubectl = Kubectl::from_env(kube.kubeconfig()).unwrap();

    let crds = istio_crds_file().unwrap();
    let t = Instant::now();
    kube.install_crds(&kubectl, &crds)
        .await
        .unwrap_or_else(|e| panic!("installing {}: {e:#}", crds.display()));
    eprintln!("istio's CRDs installed and served in {:?}", t.elapsed());
    let established = kubectl
        .get_json(&["crd", "virtualservices.networking.istio.io"])
        .await
        .unwrap();
    assert!(
        established["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True"),
        "{established:#}"
    );

    kubectl.apply_stdin(VIRTUAL_SERVICE).await.unwrap();
    let before = kubectl
        .get_json(&["virtualservice", "harness", "--namespace", "default"])
        .await
        .unwrap();

    let addr = kube.addr;
    let t = Instant::now();
    kube.restart_apiserver()
        .await
        .unwrap_or_else(|e| panic!("restarting kube-apiserver: {e:#}"));
    eprintln!("kube-apiserver restarted in {:?}", t.elapsed());
    assert_eq!(kube.addr, addr);

    // The same kubeconfig reaches the new process, and etcd kept the object.
    let after = kubectl
        .get_json(&["virtualservice", "harness", "--namespace", "default"])
        .await
        .unwrap();
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["spec"]["hosts"],
        serde_json::json!(["harness.demo.local"])
    );

    // And it takes writes again: a delete, seen through a list.
    kubectl
        .delete("virtualservice", "default", "harness")
        .await
        .unwrap();
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            let list = kubectl
                .get_json(&["virtualservices", "--all-namespaces"])
                .await?;
            Ok(match list["items"].as_array().map(Vec::len) {
                Some(0) => Ok(()),
                n => Err(format!("{n:?} VirtualServices left")),
            })
        },
    )
    .await
    .unwrap();
}
