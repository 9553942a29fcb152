//! `deploy/crds.yaml` on a real kube-apiserver: the CRDs install and become Established, the
//! HTNN objects users already have (`examples/config`) apply unchanged, nested plugin config
//! is stored as written (nothing pruned), schema violations are refused with the field named,
//! and conditions can be written through the status subresource. Also: the other install
//! manifests of `deploy/kustomization.yaml` pass strict server-side validation.
//!
//! Needs kube-apiserver and etcd (`HTNN_KUBE_APISERVER_BIN`, `HTNN_ETCD_BIN`; see the crate
//! docs), not htnn or istiod. Each test starts its own apiserver, one test at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use htnn_integration::kube::{Kube, TOKEN};
use htnn_integration::process::tail_file;
use htnn_integration::{poll_until, repo_root};
use serde_json::{Value, json};
use tempfile::TempDir;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CRD_API: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const HTNN_API: &str = "/apis/htnn.mosn.io/v1";
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);

/// A kube-apiserver with the HTNN CRDs installed.
struct Cluster {
    kube: Kube,
    /// Kind → plural, from the CRDs.
    plurals: BTreeMap<String, String>,
    _dir: TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let dir = TempDir::new().unwrap();
        let kube = Kube::start_from_env(dir.path())
            .await
            .unwrap_or_else(|e| panic!("starting kube-apiserver: {e:#}"));
        let mut cluster = Self {
            kube,
            plurals: BTreeMap::new(),
            _dir: dir,
        };
        cluster.install_crds().await;
        cluster
    }

    /// POSTs every CRD of deploy/crds.yaml and waits until each is Established and served.
    async fn install_crds(&mut self) {
        let text = std::fs::read_to_string(repo_root().join("deploy/crds.yaml")).unwrap();
        let crds: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        assert_eq!(crds.len(), 5);
        for crd in &crds {
            let (status, body) = self.json("POST", CRD_API, Some(crd)).await;
            assert_eq!(status, 201, "creating {}: {body}", crd["metadata"]["name"]);
            let names = &crd["spec"]["names"];
            self.plurals
                .insert(str_of(&names["kind"]), str_of(&names["plural"]));
        }
        let this = &*self;
        for crd in &crds {
            let name = &str_of(&crd["metadata"]["name"]);
            let plural = &str_of(&crd["spec"]["names"]["plural"]);
            poll_until(
                ESTABLISHED_TIMEOUT,
                Duration::from_millis(100),
                || async move {
                    let (_, crd) = this.json("GET", &format!("{CRD_API}/{name}"), None).await;
                    let established = crd["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    });
                    // Established comes slightly before the REST endpoint answers.
                    let (list, _) = this
                        .json("GET", &format!("{HTNN_API}/{plural}"), None)
                        .await;
                    Ok(if established && list == 200 {
                        Ok(())
                    } else {
                        Err(format!(
                            "{name}: established {established}, list answers {list}"
                        ))
                    })
                },
            )
            .await
            .unwrap_or_else(|e| panic!("waiting for CRD {name}: {e:#}"));
        }
    }

    fn path(&self, kind: &str, name: Option<&str>) -> String {
        let plural = &self.plurals[kind];
        match name {
            Some(name) => format!("{HTNN_API}/namespaces/default/{plural}/{name}"),
            None => format!("{HTNN_API}/namespaces/default/{plural}"),
        }
    }

    /// A JSON request; the answer parsed as JSON (or as a string if it is not JSON).
    async fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(Value::to_string);
        let (status, text) = self
            .kube
            .request(method, path, body.as_deref())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Creates `obj` (kind, name from the object) and returns what the apiserver stored.
    async fn create(&self, obj: &Value) -> Value {
        let kind = str_of(&obj["kind"]);
        let (status, body) = self.json("POST", &self.path(&kind, None), Some(obj)).await;
        assert_eq!(
            status, 201,
            "creating {kind} {}: {body}",
            obj["metadata"]["name"]
        );
        let (status, stored) = self.get(&kind, &str_of(&obj["metadata"]["name"])).await;
        assert_eq!(status, 200, "{stored}");
        stored
    }

    async fn get(&self, kind: &str, name: &str) -> (u16, Value) {
        self.json("GET", &self.path(kind, Some(name)), None).await
    }

    /// Server-side apply of `status` to an object's status subresource as `manager`.
    async fn apply_status(
        &self,
        kind: &str,
        name: &str,
        manager: &str,
        status: Value,
    ) -> (u16, String) {
        let patch = json!({
            "apiVersion": "htnn.mosn.io/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": "default"},
            "status": status,
        });
        let path = format!(
            "{}/status?fieldManager={manager}&force=true",
            self.path(kind, Some(name))
        );
        // JSON is YAML, so the apply body can be sent as is.
        let headers = ["Content-Type: application/apply-patch+yaml"];
        curl(
            &self.kube,
            "PATCH",
            &path,
            &headers,
            Some(&patch.to_string()),
        )
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.kube.apiserver_log();
            eprintln!("----- kube-apiserver log: {} -----", log.display());
            eprintln!("{}", tail_file(log, 8_000));
        }
    }
}

/// `Kube::request` only sends JSON bodies and no extra headers; server-side apply and the
/// Table view need both.
async fn curl(
    kube: &Kube,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String) {
    const MARK: &str = "\n--htnn-status:";
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["--silent", "--show-error", "--insecure", "--max-time", "5"])
        .args(["--request", method])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--write-out", &format!("{MARK}%{{http_code}}")]);
    for h in headers {
        cmd.args(["--header", h]);
    }
    if let Some(body) = body {
        cmd.args(["--data-binary", body]);
    }
    let out = cmd
        .arg(format!("https://{}{path}", kube.addr))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl {method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, status) = stdout.rsplit_once(MARK).expect("curl printed the status");
    (status.trim().parse().unwrap(), body.to_string())
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// The HTNN documents of examples/config, in file order.
fn example_objects() -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples/config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let htnn = docs
            .into_iter()
            .filter(|d| d["apiVersion"] == "htnn.mosn.io/v1");
        out.extend(htnn.map(|d| (file.clone(), d)));
    }
    out
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "htnn.mosn.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

/// Plugin config that a pruning schema would mangle: nested maps and lists, empty ones,
/// numbers of each kind, strings that look like other types.
fn nested_config() -> Value {
    json!({
        "rules": [
            {"match": {"headers": [{"name": "x-a", "values": ["1", "2"]}], "any": {}},
             "actions": [[1, 2.5, -3], [], [{"deep": {"deeper": {"deepest": [true, false]}}}]]},
            {"match": {}, "weight": 9007199254740991_i64},
        ],
        "limits": {"per": {"second": 10, "minute": {"burst": 600, "tags": ["a", {"b": "c"}]}}},
        "typed": {"bool": "true", "int": "42", "float": 1e-3, "empty": "", "unset": null},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_and_nested_config_are_stored_unchanged() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start().await;

    let examples = example_objects();
    let kinds: Vec<String> = examples.iter().map(|(_, d)| str_of(&d["kind"])).collect();
    assert!(
        kinds.contains(&"FilterPolicy".into()) && kinds.contains(&"Consumer".into()),
        "{kinds:?}"
    );
    let config = nested_config();
    let plugins = json!({"nested": {"config": config}, "other": {"config": {}}});
    let target = json!({"group": "networking.istio.io", "kind": "VirtualService", "name": "api"});
    let extra = [
        object(
            "FilterPolicy",
            "nested",
            json!({"targetRef": target, "filters": plugins,
                   "subPolicies": [{"sectionName": "orders", "filters": plugins},
                                   {"sectionName": "public.v2", "filters": {}}]}),
        ),
        object(
            "HTTPFilterPolicy",
            "legacy",
            json!({"targetRef": target, "filters": plugins}),
        ),
        object(
            "Consumer",
            "nested",
            json!({"auth": plugins, "filters": plugins, "name": "dp-name"}),
        ),
        object(
            "ServiceRegistry",
            "nacos",
            json!({"type": "nacos", "config": config}),
        ),
        object(
            "DynamicConfig",
            "demo",
            json!({"type": "demo", "config": config}),
        ),
        // The core group is "", which the group pattern allows.
        object(
            "FilterPolicy",
            "core-group",
            json!({"targetRef": {"group": "", "kind": "Service", "name": "s"}}),
        ),
    ];
    let all = examples
        .into_iter()
        .chain(extra.into_iter().map(|d| (PathBuf::from("(test)"), d)));
    for (file, doc) in all {
        let stored = cluster.create(&doc).await;
        assert_eq!(
            stored["spec"],
            doc["spec"],
            "{} {} from {} changed when stored",
            doc["kind"],
            doc["metadata"]["name"],
            file.display()
        );
    }

    // spec is optional, as in HTNN's CRDs.
    let mut no_spec = object("ServiceRegistry", "no-spec", json!({}));
    no_spec.as_object_mut().unwrap().remove("spec");
    let stored = cluster.create(&no_spec).await;
    assert!(stored.get("spec").is_none(), "{stored}");

    // Short names and the category reach discovery (what kubectl resolves them from).
    let (status, discovery) = cluster.json("GET", HTNN_API, None).await;
    assert_eq!(status, 200);
    let resources = discovery["resources"].as_array().unwrap();
    for (kind, short) in [
        ("FilterPolicy", "fp"),
        ("HTTPFilterPolicy", "hfp"),
        ("Consumer", "htnnconsumer"),
    ] {
        let r = resources
            .iter()
            .find(|r| r["kind"] == kind && r["name"] == cluster.plurals[kind])
            .unwrap();
        assert_eq!(r["shortNames"], json!([short]), "{kind}");
        assert_eq!(r["categories"], json!(["htnn"]), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violations_are_refused_naming_the_field() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start().await;
    let demo = json!({"demo": {"config": {"hostName": "x"}}});
    let vs = |extra: Value| {
        let mut t =
            json!({"group": "networking.istio.io", "kind": "VirtualService", "name": "api"});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        t
    };
    let cases = [
        (
            "FilterPolicy",
            json!({"targetRef": vs(json!({"kind": "1bad"}))}),
            "spec.targetRef.kind",
        ),
        (
            "FilterPolicy",
            json!({"targetRef": {"group": "networking.istio.io", "kind": "VirtualService"}}),
            "spec.targetRef.name",
        ),
        (
            "FilterPolicy",
            json!({"targetRef": vs(json!({"group": "Not_A_Group"}))}),
            "spec.targetRef.group",
        ),
        (
            "FilterPolicy",
            json!({"targetRef": vs(json!({"namespace": "a.b"}))}),
            "spec.targetRef.namespace",
        ),
        (
            "FilterPolicy",
            json!({"targetRef": vs(json!({"sectionName": "Bad_Name"}))}),
            "spec.targetRef.sectionName",
        ),
        (
            "FilterPolicy",
            json!({"targetRef": vs(json!({})), "filters": {"demo": {}}}),
            "spec.filters.demo.config",
        ),
        (
            "FilterPolicy",
            json!({"targetRef": vs(json!({})), "filters": {"demo": {"config": "x"}}}),
            "spec.filters.demo.config",
        ),
        (
            "FilterPolicy",
            json!({"targetRef": vs(json!({})),
                   "subPolicies": [{"sectionName": "a", "filters": demo}, {"sectionName": "a", "filters": demo}]}),
            "spec.subPolicies[1]",
        ),
        (
            "FilterPolicy",
            json!({"subPolicies": [{"filters": demo}]}),
            "spec.subPolicies[0].sectionName",
        ),
        (
            "HTTPFilterPolicy",
            json!({"targetRef": vs(json!({"kind": "1bad"}))}),
            "spec.targetRef.kind",
        ),
        ("Consumer", json!({"auth": {}}), "spec.auth"),
        ("Consumer", json!({"filters": demo}), "spec.auth"),
        ("DynamicConfig", json!({"type": "demo"}), "spec.config"),
        ("DynamicConfig", json!({"config": {}}), "spec.type"),
        (
            "ServiceRegistry",
            json!({"type": "nacos", "config": [1]}),
            "spec.config",
        ),
    ];
    for (i, (kind, spec, field)) in cases.into_iter().enumerate() {
        let obj = object(kind, &format!("bad-{i}"), spec);
        let (status, body) = cluster
            .json("POST", &cluster.path(kind, None), Some(&obj))
            .await;
        assert_eq!(
            status, 422,
            "{kind} {} was not refused: {body}",
            obj["spec"]
        );
        let message = str_of(&body["message"]);
        assert!(
            message.contains(field),
            "refusing {kind} {}, the apiserver did not name {field}: {message}",
            obj["spec"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_are_written_through_the_status_subresource() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start().await;
    let accepted = json!({
        "type": "Accepted", "status": "True", "reason": "Accepted",
        "message": "The policy has been accepted", "observedGeneration": 1,
        "lastTransitionTime": "2026-01-02T03:04:05Z",
    });
    let minimal = [
        (
            "FilterPolicy",
            json!({"targetRef": {"group": "networking.istio.io", "kind": "VirtualService", "name": "api"}}),
        ),
        ("HTTPFilterPolicy", json!({})),
        (
            "Consumer",
            json!({"auth": {"keyAuth": {"config": {"key": "k"}}}}),
        ),
        ("ServiceRegistry", json!({"type": "nacos"})),
        ("DynamicConfig", json!({"type": "demo", "config": {}})),
    ];
    for (kind, spec) in minimal {
        let created = cluster.create(&object(kind, "s", spec.clone())).await;
        let (status, body) = cluster
            .apply_status(kind, "s", "htnn", json!({"conditions": [accepted]}))
            .await;
        assert_eq!(status, 200, "{kind}: {body}");
        let (_, stored) = cluster.get(kind, "s").await;
        assert_eq!(stored["status"]["conditions"], json!([accepted]), "{kind}");
        assert_eq!(stored["spec"], spec, "{kind}");
        // A status write is not a spec change.
        assert_eq!(
            stored["metadata"]["generation"], created["metadata"]["generation"],
            "{kind}"
        );
    }

    // conditions is a list-map keyed by type: a second field manager adds its own condition
    // instead of replacing (or conflicting over) the whole list.
    let ready = json!({"type": "example.com/Ready", "status": "Unknown", "reason": "Pending",
                       "message": "", "lastTransitionTime": "2026-01-02T03:04:05Z"});
    let (status, body) = cluster
        .apply_status("FilterPolicy", "s", "other", json!({"conditions": [ready]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, stored) = cluster.get("FilterPolicy", "s").await;
    let types: Vec<&Value> = stored["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["type"])
        .collect();
    assert_eq!(
        types,
        [&json!("Accepted"), &json!("example.com/Ready")],
        "{stored}"
    );

    // The printer columns read the Accepted condition (what `kubectl get fp` shows).
    let accept = ["Accept: application/json;as=Table;v=v1;g=meta.k8s.io"];
    let (status, table) = curl(
        &cluster.kube,
        "GET",
        &cluster.path("FilterPolicy", Some("s")),
        &accept,
        None,
    )
    .await;
    assert_eq!(status, 200, "{table}");
    let table: Value = serde_json::from_str(&table).unwrap();
    let columns: Vec<&Value> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(
        columns,
        [
            &json!("Name"),
            &json!("Accepted"),
            &json!("Reason"),
            &json!("Age")
        ]
    );
    assert_eq!(
        table["rows"][0]["cells"].as_array().unwrap()[1..3],
        [json!("True"), json!("Accepted")],
        "{table}"
    );

    // Conditions are validated like metav1.Condition.
    let bad = [
        (json!({"status": "Maybe"}), "status.conditions[0].status"),
        (
            json!({"reason": "not a reason"}),
            "status.conditions[0].reason",
        ),
        (
            json!({"observedGeneration": -1}),
            "status.conditions[0].observedGeneration",
        ),
        (
            json!({"lastTransitionTime": "yesterday"}),
            "status.conditions[0].lastTransitionTime",
        ),
    ];
    for (change, field) in bad {
        let mut condition = accepted.clone();
        condition
            .as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        let (status, body) = cluster
            .apply_status("Consumer", "s", "htnn", json!({"conditions": [condition]}))
            .await;
        assert_eq!(status, 422, "condition {condition} was not refused: {body}");
        assert!(
            body.contains(field),
            "refusing {condition}, the apiserver did not name {field}: {body}"
        );
    }
}

/// The other manifests `kubectl apply -k deploy/` applies are accepted by the apiserver as
/// written: server-side dry run with strict field validation (a misspelt field is an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_manifests_pass_strict_server_side_validation() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start().await;
    let deploy = repo_root().join("deploy");
    let kustomization: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(deploy.join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let files: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    assert!(files.contains(&"crds.yaml".to_string()), "{files:?}");
    let mut kinds = Vec::new();
    for file in files.iter().filter(|f| *f != "crds.yaml") {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&std::fs::read_to_string(deploy.join(file)).unwrap())
                .unwrap();
        for doc in docs {
            let kind = str_of(&doc["kind"]);
            let api_version = str_of(&doc["apiVersion"]);
            let base = if api_version.contains('/') {
                format!("/apis/{api_version}")
            } else {
                format!("/api/{api_version}")
            };
            // Every kind in these files pluralises with a plain "s".
            let plural = format!("{}s", kind.to_lowercase());
            let path = match doc["metadata"]["namespace"].as_str() {
                Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
                None => format!("{base}/{plural}"),
            };
            let path = format!("{path}?dryRun=All&fieldValidation=Strict");
            let (status, body) = cluster.json("POST", &path, Some(&doc)).await;
            assert_eq!(
                status, 201,
                "{file}: {kind} {}: {body}",
                doc["metadata"]["name"]
            );
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration"
        ]
    );
}
