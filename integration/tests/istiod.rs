//! `htnn serve` → real istiod, checked through istiod's `/debug/configz`.
//!
//! Needs the binaries named by `HTNN_BIN`, `HTNN_ISTIOD_BIN`, `HTNN_KUBE_APISERVER_BIN` and
//! `HTNN_ETCD_BIN` (see the crate docs); the tests fail, with instructions, when they are
//! missing. istiod only starts with a Kubernetes client, so each environment includes a real,
//! empty etcd + kube-apiserver; every istio object comes from htnn over MCP. Tests run one at
//! a time (each starts its own kube-apiserver + htnn + istiod) so that timings are not
//! distorted by each other.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use htnn_integration::check::{compare, missing, wait_for_absence, wait_for_object};
use htnn_integration::corpus::{self, CorpusObject, ObjectKey};
use htnn_integration::env::TestEnv;
use htnn_integration::{metric_sum, poll_until};
use serde_json::Value;

/// One environment at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How fast a file change must reach istiod's store.
const PROPAGATION: Duration = Duration::from_secs(3);

fn load_corpus() -> Vec<CorpusObject> {
    corpus::load_dir(&corpus::corpus_dir()).unwrap_or_else(|e| panic!("loading the corpus: {e:#}"))
}

async fn start_env(with_corpus: bool) -> TestEnv {
    let seed = corpus::corpus_dir();
    TestEnv::start(with_corpus.then_some(seed.as_path()))
        .await
        .unwrap_or_else(|e| panic!("starting htnn serve + istiod: {e:#}"))
}

fn parse_one(yaml: &str) -> Value {
    let mut docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("test YAML");
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

/// A VirtualService used as a probe; `timeout` is written as given (Go-style durations).
fn probe_vs(name: &str, timeout: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  hosts:\n  - {name}.probe.example.com\n  http:\n  - name: main\n    route:\n    - destination:\n\
         \x20       host: {name}.default.svc.cluster.local\n    timeout: {timeout}\n"
    )
}

fn vs_key(name: &str) -> ObjectKey {
    ObjectKey::new("VirtualService", "default", name)
}

/// Waits until every corpus object is in configz (or `timeout`), then returns configz.
async fn configz_with_corpus(
    env: &TestEnv,
    corpus: &[CorpusObject],
    timeout: Duration,
) -> std::collections::BTreeMap<ObjectKey, Value> {
    let start = Instant::now();
    loop {
        let configz = env
            .istiod
            .configz()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        if missing(corpus.iter().map(|o| &o.key), &configz).is_empty() || start.elapsed() > timeout
        {
            return configz;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn corpus_object<'a>(
    corpus: &'a [CorpusObject],
    kind: &str,
    namespace: &str,
    name: &str,
) -> &'a CorpusObject {
    let key = ObjectKey::new(kind, namespace, name);
    corpus
        .iter()
        .find(|o| o.key == key)
        .unwrap_or_else(|| panic!("{key} is not in the corpus"))
}

/// (a) Every corpus object reaches istiod with the spec (and labels/annotations) it was
/// written with, up to jsonpb's canonical form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_round_trips_through_istiod() {
    let _serial = SERIAL.lock().await;
    let corpus = load_corpus();
    let env = start_env(true).await;
    println!(
        "kube-apiserver ready after {:?}, htnn serve ready after {:?} (started together), \
         istiod xDS port open after {:?}",
        env.kube.ready_after,
        env.htnn().ready_after,
        env.istiod.ready_after
    );

    // The admin endpoints the harness does not otherwise use.
    let healthz = env.htnn().get("/healthz").await.expect("/healthz");
    assert_eq!(healthz.status, 200, "/healthz: {}", healthz.text());
    let snapshot = env
        .htnn()
        .get("/debug/snapshot")
        .await
        .expect("/debug/snapshot");
    assert_eq!(snapshot.status, 200, "/debug/snapshot: {}", snapshot.text());
    snapshot.json().expect("/debug/snapshot is JSON");

    let configz = configz_with_corpus(&env, &corpus, Duration::from_secs(10)).await;
    let mut report = Vec::new();
    let mut identical = 0;
    for object in &corpus {
        match configz.get(&object.key) {
            None => report.push(format!(
                "MISSING  {} ({}): istiod does not have it",
                object.key,
                object.origin()
            )),
            Some(entry) => {
                let diffs = compare(&object.object, entry);
                if diffs.is_empty() {
                    identical += 1;
                } else {
                    report.push(format!(
                        "DIFFERS  {} ({}):\n    {}",
                        object.key,
                        object.origin(),
                        diffs.join("\n    ")
                    ));
                }
            }
        }
    }
    let expected: BTreeSet<&ObjectKey> = corpus.iter().map(|o| &o.key).collect();
    let extra: Vec<String> = configz
        .keys()
        .filter(|k| !expected.contains(k))
        .map(ToString::to_string)
        .collect();
    println!(
        "corpus: {} objects, {identical} identical in istiod, {} with problems; {} other object(s) in istiod{}",
        corpus.len(),
        report.len(),
        extra.len(),
        if extra.is_empty() {
            String::new()
        } else {
            format!(": {}", extra.join(", "))
        }
    );
    assert!(
        report.is_empty(),
        "corpus objects not faithfully stored by istiod:\n{}",
        report.join("\n")
    );
}

/// (b) Adding, editing and deleting files reaches istiod within 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_reach_istiod() {
    let _serial = SERIAL.lock().await;
    let corpus = load_corpus();
    let env = start_env(true).await;
    configz_with_corpus(&env, &corpus, Duration::from_secs(10)).await;

    // A new file.
    let probe = vs_key("edit-probe");
    let v1 = probe_vs("edit-probe", "1s");
    env.write_config("zz-edit-probe.yaml", &v1).unwrap();
    let took = wait_for_object(&env.istiod, &probe, &parse_one(&v1), PROPAGATION)
        .await
        .unwrap_or_else(|e| panic!("new file: {e:#}"));
    println!("new file visible in istiod after {took:?}");

    // Editing it.
    let v2 = probe_vs("edit-probe", "2m30s");
    env.write_config("zz-edit-probe.yaml", &v2).unwrap();
    let took = wait_for_object(&env.istiod, &probe, &parse_one(&v2), PROPAGATION)
        .await
        .unwrap_or_else(|e| panic!("edited file: {e:#}"));
    println!("edit visible after {took:?}");

    // Editing one document of a multi-document corpus file.
    let file = "20-virtualservices.yaml";
    let text = env.read_config(file).unwrap();
    assert_eq!(
        text.matches("    timeout: 5m\n").count(),
        1,
        "corpus changed: fix this test"
    );
    env.write_config(
        file,
        &text.replace("    timeout: 5m\n", "    timeout: 7m\n"),
    )
    .unwrap();
    let mut reviews = corpus_object(&corpus, "VirtualService", "default", "reviews")
        .object
        .clone();
    *reviews.pointer_mut("/spec/http/1/timeout").unwrap() = Value::from("7m");
    let took = wait_for_object(&env.istiod, &vs_key("reviews"), &reviews, PROPAGATION)
        .await
        .unwrap_or_else(|e| panic!("edited corpus document: {e:#}"));
    println!("edit of one document in a multi-document file visible after {took:?}");

    // Deleting the probe file.
    env.remove_config("zz-edit-probe.yaml").unwrap();
    let took = wait_for_absence(&env.istiod, &probe, PROPAGATION)
        .await
        .unwrap_or_else(|e| panic!("deleted file: {e:#}"));
    println!("deletion visible after {took:?}");

    // Nothing else moved.
    let configz = env.istiod.configz().await.unwrap();
    let gone = missing(corpus.iter().map(|o| &o.key), &configz);
    assert!(gone.is_empty(), "corpus objects disappeared: {gone:?}");
}

/// (c) istiod keeps its config while `htnn serve` is down, and resyncs when it comes back,
/// including changes made while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htnn_restart_keeps_and_resyncs_istiod_config() {
    let _serial = SERIAL.lock().await;
    let corpus = load_corpus();
    let mut env = start_env(true).await;
    let baseline = configz_with_corpus(&env, &corpus, Duration::from_secs(10)).await;
    let gone = missing(corpus.iter().map(|o| &o.key), &baseline);
    assert!(gone.is_empty(), "corpus not loaded to begin with: {gone:?}");
    let baseline_keys: Vec<ObjectKey> = baseline.keys().cloned().collect();

    env.kill_htnn();
    let down_at = Instant::now();

    // While down: nothing disappears.
    let mut polls = 0;
    while down_at.elapsed() < Duration::from_secs(3) {
        let configz = env
            .istiod
            .configz()
            .await
            .unwrap_or_else(|e| panic!("configz while htnn is down: {e:#}"));
        let lost = missing(&baseline_keys, &configz);
        assert!(
            lost.is_empty(),
            "istiod dropped objects {:?} after htnn serve died",
            lost
        );
        polls += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Changes made while down.
    let added = probe_vs("while-down", "45s");
    env.write_config("zz-while-down.yaml", &added).unwrap();
    let file = "20-virtualservices.yaml";
    let text = env.read_config(file).unwrap();
    env.write_config(
        file,
        &text.replace("    timeout: 5m\n", "    timeout: 9m\n"),
    )
    .unwrap();
    let mut reviews = corpus_object(&corpus, "VirtualService", "default", "reviews")
        .object
        .clone();
    *reviews.pointer_mut("/spec/http/1/timeout").unwrap() = Value::from("9m");

    env.restart_htnn()
        .await
        .unwrap_or_else(|e| panic!("restarting htnn serve: {e:#}"));
    let restarted_at = Instant::now();
    println!(
        "htnn serve was down for {:?} ({polls} configz polls, nothing lost)",
        restarted_at - down_at
    );

    // Resync (istiod reconnects with backoff: 0.5 s doubling), and nothing disappears meanwhile.
    let while_down_key = vs_key("while-down");
    let added = parse_one(&added);
    let (_, took) = poll_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let configz = env.istiod.configz().await?;
            let lost = missing(&baseline_keys, &configz);
            if !lost.is_empty() {
                anyhow::bail!("istiod dropped objects {lost:?} while htnn serve restarted");
            }
            let pending: Vec<String> = [(&while_down_key, &added), (&vs_key("reviews"), &reviews)]
                .into_iter()
                .filter_map(|(key, written)| match configz.get(key) {
                    None => Some(format!("{key} not in configz")),
                    Some(entry) => {
                        let d = compare(written, entry);
                        (!d.is_empty()).then(|| format!("{key}: {}", d.join("; ")))
                    }
                })
                .collect();
            Ok(if pending.is_empty() {
                Ok(())
            } else {
                Err(pending.join(" | "))
            })
        },
    )
    .await
    .unwrap_or_else(|e| panic!("resync after restart: {e:#}"));
    println!("istiod resynced {took:?} after htnn serve was ready again");
}

/// (d) Bad files do not disturb what istiod has; htnn reports them in /metrics. A file that
/// turns bad keeps its last good state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_files_do_not_disturb_istiod() {
    let _serial = SERIAL.lock().await;
    let corpus = load_corpus();
    let env = start_env(true).await;
    configz_with_corpus(&env, &corpus, Duration::from_secs(10)).await;

    let good = probe_vs("last-good", "1s");
    env.write_config("zz-last-good.yaml", &good).unwrap();
    wait_for_object(
        &env.istiod,
        &vs_key("last-good"),
        &parse_one(&good),
        PROPAGATION,
    )
    .await
    .unwrap_or_else(|e| panic!("good probe: {e:#}"));

    let metrics_before = env.htnn().metrics().await.expect("/metrics");
    let errors_before = metric_sum(&metrics_before, "htnn_load_errors").unwrap_or(0.0);

    env.write_config(
        "bad-syntax.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad-syntax, namespace: default\nspec: [\n",
    )
    .unwrap();
    env.write_config(
        "bad-unknown-field.yaml",
        &probe_vs("bad-unknown-field", "5s")
            .replace("    timeout: 5s\n", "    timeout: 5s\n    timeoutz: 5s\n"),
    )
    .unwrap();
    env.write_config("bad-duration.yaml", &probe_vs("bad-duration", "5 minutes"))
        .unwrap();
    // The good file turns bad.
    env.write_config("zz-last-good.yaml", &probe_vs("last-good", "soon"))
        .unwrap();

    let (metrics, took) = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async {
            let text = env.htnn().metrics().await?;
            let errors = metric_sum(&text, "htnn_load_errors").unwrap_or(0.0);
            Ok(if errors > errors_before {
                Ok(text)
            } else {
                Err(format!("htnn_load_errors still {errors}"))
            })
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "htnn /metrics does not report the load errors: {e:#}\n{}",
            metrics_before
        )
    });
    println!(
        "load errors reported after {took:?}: htnn_load_errors {:?} → {:?}, htnn_invalid_objects {:?}",
        errors_before,
        metric_sum(&metrics, "htnn_load_errors"),
        metric_sum(&metrics, "htnn_invalid_objects")
    );

    // Give a (wrong) push time to happen, then check istiod.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = env.htnn().get("/readyz").await.expect("/readyz");
    assert_eq!(
        ready.status,
        200,
        "htnn serve not ready after bad files: {}",
        ready.text()
    );
    let configz = env.istiod.configz().await.unwrap();
    let mut problems = Vec::new();
    for object in &corpus {
        match configz.get(&object.key) {
            None => problems.push(format!("{} disappeared", object.key)),
            Some(entry) => {
                let d = compare(&object.object, entry);
                if !d.is_empty() {
                    problems.push(format!("{} changed: {}", object.key, d.join("; ")));
                }
            }
        }
    }
    match configz.get(&vs_key("last-good")) {
        None => problems
            .push("last-good: the last good state of a file that turned bad was removed".into()),
        Some(entry) => {
            let d = compare(&parse_one(&good), entry);
            if !d.is_empty() {
                problems.push(format!(
                    "last-good is no longer its last good state: {}",
                    d.join("; ")
                ));
            }
        }
    }
    for name in ["bad-syntax", "bad-unknown-field", "bad-duration"] {
        if configz.contains_key(&vs_key(name)) {
            problems.push(format!("{name} reached istiod"));
        }
    }
    assert!(
        problems.is_empty(),
        "bad files disturbed istiod:\n{}",
        problems.join("\n")
    );
}

/// (d, per document) One bad document does not hide the good documents of the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_document_does_not_hide_good_siblings() {
    let _serial = SERIAL.lock().await;
    let env = start_env(false).await;
    let good_vs = probe_vs("mixed-good", "30s");
    let good_dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: mixed-good\n  namespace: default\n\
                   spec:\n  host: mixed-good.default.svc.cluster.local\n  trafficPolicy:\n    connectionPool:\n      tcp:\n\
                   \x20       connectTimeout: 250ms\n";
    let bad_vs = probe_vs("mixed-bad", "5s").replace("  hosts:\n", "  hostz:\n");
    env.write_config(
        "mixed.yaml",
        &format!("{good_vs}---\n{bad_vs}---\n{good_dr}"),
    )
    .unwrap();

    wait_for_object(
        &env.istiod,
        &vs_key("mixed-good"),
        &parse_one(&good_vs),
        PROPAGATION,
    )
    .await
    .unwrap_or_else(|e| panic!("good VirtualService next to a bad document: {e:#}"));
    wait_for_object(
        &env.istiod,
        &ObjectKey::new("DestinationRule", "default", "mixed-good"),
        &parse_one(good_dr),
        PROPAGATION,
    )
    .await
    .unwrap_or_else(|e| panic!("good DestinationRule next to a bad document: {e:#}"));
    let configz = env.istiod.configz().await.unwrap();
    assert!(
        !configz.contains_key(&vs_key("mixed-bad")),
        "the bad document reached istiod"
    );
}

/// Measurement, not a pass/fail check: time from a file edit to istiod's configz, and
/// htnn's memory with the corpus loaded. `cargo test -p htnn-integration -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn propagation_latency() {
    let _serial = SERIAL.lock().await;
    let corpus = load_corpus();
    let env = start_env(true).await;
    configz_with_corpus(&env, &corpus, Duration::from_secs(10)).await;
    let key = vs_key("latency-probe");
    let first = probe_vs("latency-probe", "1s");
    env.write_config("zz-latency.yaml", &first).unwrap();
    wait_for_object(
        &env.istiod,
        &key,
        &parse_one(&first),
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    let mut samples = Vec::new();
    for i in 0..20 {
        let text = probe_vs("latency-probe", &format!("{}ms", 2000 + i * 250));
        let written = parse_one(&text);
        let start = Instant::now();
        env.write_config("zz-latency.yaml", &text).unwrap();
        wait_for_object(&env.istiod, &key, &written, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("edit {i}: {e:#}"));
        samples.push(start.elapsed());
        // Let istiod's debounce settle so the samples are independent.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "edit → istiod configz over {} edits: min {:?}, median {:?}, p90 {:?}, max {:?} (poll interval 25 ms)",
        samples.len(),
        samples[0],
        pct(0.5),
        pct(0.9),
        samples[samples.len() - 1]
    );
    println!(
        "htnn serve RSS with {} corpus objects loaded: {} KiB; istiod RSS: {} KiB",
        corpus.len() + 1,
        env.htnn().rss_kib().map_or("?".into(), |v| v.to_string()),
        env.istiod.rss_kib().map_or("?".into(), |v| v.to_string()),
    );
}
