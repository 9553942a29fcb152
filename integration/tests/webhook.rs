//! The admission webhook behind a real kube-apiserver: the apiserver calls `htnn`'s webhook
//! server (in this process) over HTTPS and refuses what it denies, with its message.
//!
//! Needs `HTNN_KUBE_APISERVER_BIN` and `HTNN_ETCD_BIN` (see the crate docs) and the `openssl`
//! command line tool. The cluster has no istio CRDs, so the test installs a schemaless
//! `virtualservices.networking.istio.io` of its own: what the webhook sees is then exactly what
//! the client sent, plus the metadata the apiserver adds.

use std::time::Duration;

use htnn_integration::certs::SelfSigned;
use htnn_integration::kube::Kube;
use htnn_integration::poll_until;
use htnn_mcp_server::k8s::webhook::WebhookServer;
use serde_json::{Value, json};

const WEBHOOK: &str = "validation.htnn.mosn.io";
const VS_PATH: &str = "/apis/networking.istio.io/v1/namespaces/default/virtualservices";
/// The apiserver activates a new webhook configuration through an informer (≈0.6 s).
const ACTIVATION: Duration = Duration::from_secs(20);

const CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1",
  "kind": "CustomResourceDefinition",
  "metadata": {"name": "virtualservices.networking.istio.io"},
  "spec": {
    "group": "networking.istio.io",
    "scope": "Namespaced",
    "names": {"plural": "virtualservices", "singular": "virtualservice", "kind": "VirtualService", "listKind": "VirtualServiceList"},
    "versions": [{
      "name": "v1", "served": true, "storage": true,
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
      }}}
    }]
  }
}"#;

fn vs(name: &str, annotations: Value, http: Value) -> String {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"hosts": ["a.example.com"], "gateways": ["istio-system/gw"], "http": http},
    })
    .to_string()
}

async fn request(kube: &Kube, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = kube
        .request(method, path, Some(body))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_refuses_what_the_webhook_denies() {
    let dir = tempfile::tempdir().unwrap();
    let kube = Kube::start_from_env(&dir.path().join("kube"))
        .await
        .unwrap_or_else(|e| panic!("starting kube-apiserver: {e:#}"));

    let certs = SelfSigned::generate(dir.path(), "webhook").unwrap();
    let server = WebhookServer::bind("127.0.0.1:0".parse().unwrap(), &certs.cert, &certs.key)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let denials = server.denials();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let (status, v) = request(
        &kube,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        CRD,
    )
    .await;
    // Not 409: istio's real CRD would prune unknown fields before admission, hiding them from
    // the webhook, so this test needs its own schemaless one.
    assert_eq!(status, 201, "{v}");
    poll_until(ACTIVATION, Duration::from_millis(100), || async {
        let (status, text) = kube.request("GET", VS_PATH, None).await?;
        Ok(if status == 200 {
            Ok(())
        } else {
            Err(format!("{status}: {text}"))
        })
    })
    .await
    .expect("the VirtualService CRD is served");

    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "htnn"},
        "webhooks": [{
            "name": WEBHOOK,
            "clientConfig": {"url": format!("https://{addr}/validate"), "caBundle": certs.ca_bundle().unwrap()},
            "rules": [{"apiGroups": ["networking.istio.io"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"], "resources": ["virtualservices"]}],
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
        }],
    });
    let (status, v) = request(
        &kube,
        "POST",
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        &config.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    // Until the configuration is active, bad objects get in: a fresh name per attempt.
    let bad_http =
        json!([{"name": "r", "timeoutt": "5s", "route": [{"destination": {"host": "b"}}]}]);
    let mut attempt = 0;
    let (denied, after) = poll_until(ACTIVATION, Duration::from_millis(100), || {
        attempt += 1;
        let body = vs(&format!("bad-{attempt}"), json!({}), bad_http.clone());
        let kube = &kube;
        async move {
            let (status, v) = request(kube, "POST", VS_PATH, &body).await;
            Ok(match status {
                201 => Err("still admitted".to_string()),
                _ => Ok((status, v)),
            })
        }
    })
    .await
    .expect("the webhook starts denying");
    let (status, v) = denied;
    let message = v["message"].as_str().unwrap_or_default();
    assert_eq!(status, 400, "{v}");
    assert!(
        message.starts_with(&format!(
            "admission webhook \"{WEBHOOK}\" denied the request: "
        )),
        "{v}"
    );
    assert!(
        message.contains("VirtualService default/bad-")
            && message.contains("spec.http[0].timeoutt: unknown field"),
        "{v}"
    );
    eprintln!("webhook active after {after:?}; apiserver answered {status}: {message}");

    // A good object is admitted, with everything the apiserver adds to it.
    let good_http = json!([{"name": "r", "route": [{"destination": {"host": "b"}}]}]);
    let (status, created) =
        request(&kube, "POST", VS_PATH, &vs("good", json!({}), good_http)).await;
    assert_eq!(status, 201, "{created}");

    // UPDATE is reviewed too: a broken embedded policy is refused and the object kept.
    let mut update = created.clone();
    update["metadata"]["annotations"] = json!({
        "htnn.mosn.io/filterpolicy": r#"{"filters": {"limitReq": {"config": {"average": -1}}}}"#
    });
    let (status, v) = request(
        &kube,
        "PUT",
        &format!("{VS_PATH}/good"),
        &update.to_string(),
    )
    .await;
    let message = v["message"].as_str().unwrap_or_default();
    assert_eq!(status, 400, "{v}");
    assert!(
        message.contains(
            "FilterPolicy default/embedded-virtualservice-good: Invalid: annotation htnn.mosn.io/filterpolicy: spec.filters.limitReq.config.average"
        ),
        "{v}"
    );
    let (status, v) = request(&kube, "DELETE", &format!("{VS_PATH}/good"), "{}").await;
    assert_eq!(status, 200, "{v}");
    assert!(denials.get() >= 2);

    stop.send(()).unwrap();
    task.await.unwrap();
}
