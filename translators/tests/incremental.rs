//! Property: the incremental [`Translator`] always equals a translation from scratch.
//!
//! Random sequences of adds, edits and deletes of every HTNN and istio kind the translator
//! reads (and a few it only passes through) are applied one change (or a small batch) at a
//! time; after each step the incremental output (objects and statuses) must equal
//! `translate()` of the same input, and the reported delta must name every object and status
//! that changed. Names are drawn from small pools so that objects collide: policies share
//! targets, VirtualServices share route names, Gateways come and go under VirtualServices,
//! consumers share data-plane names, and a user EnvoyFilter takes a generated one's name.
//!
//! Seeds are fixed, so a failure reproduces; `HTNN_PROPTEST_SEEDS=N` runs more of them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use htnn_translators::model::{Object, ObjectRef};
use htnn_translators::{Change, Options, Output, Translator, parse, translate};

/// xorshift64*: enough randomness for generating inputs, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const NAMESPACES: &[&str] = &["a", "b"];
const VS_NAMES: &[&str] = &["v0", "v1", "v2", "v3"];
const ROUTE_NAMES: &[&str] = &["r0", "r1", "shared", "a.v0", ""];
const TIMESTAMPS: &[&str] = &["", "2024-01-01T00:00:00Z", "2025-06-01T00:00:00Z"];

fn timestamp(rng: &mut Rng) -> String {
    match rng.pick(TIMESTAMPS) {
        "" => String::new(),
        t => format!(", creationTimestamp: '{t}'"),
    }
}

fn plugins(rng: &mut Rng) -> String {
    let mut out = Vec::new();
    if rng.chance(50) {
        out.push(format!(
            "demo: {{config: {{hostName: x-{}}}}}",
            rng.below(3)
        ));
    }
    if rng.chance(40) {
        out.push(format!(
            "limitReq: {{config: {{average: {}}}}}",
            rng.pick(&["1", "2", "-1"])
        ));
    }
    if rng.chance(30) {
        out.push("keyAuth: {config: {keys: [{name: x-key}]}}".into());
    }
    if rng.chance(20) {
        out.push("consumerRestriction: {config: {denyIfNoConsumer: true}}".into());
    }
    if rng.chance(5) {
        out.push("noSuchPlugin: {config: {}}".into());
    }
    format!("{{{}}}", out.join(", "))
}

fn gateway(rng: &mut Rng) -> String {
    let (ns, name) = if rng.chance(50) {
        ("istio-system", "gw")
    } else {
        ("a", "gw2")
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{selector: {{istio: ingressgateway}}, servers: [{{port: {{number: {}, name: http, protocol: HTTP}}, hosts: ['*']}}]}}\n",
        80 + rng.below(2)
    )
}

fn virtual_service(rng: &mut Rng) -> String {
    let ns = rng.pick(NAMESPACES);
    let name = rng.pick(VS_NAMES);
    let gateways = rng.pick(&[
        "[istio-system/gw]",
        "[gw2]",
        "[mesh]",
        "[istio-system/gw, a/gw2]",
        "[]",
    ]);
    let mut http = Vec::new();
    for _ in 0..rng.below(4) {
        let route = rng.pick(ROUTE_NAMES);
        let name = if route.is_empty() {
            String::new()
        } else {
            format!("name: {route}, ")
        };
        let matches = match rng.below(3) {
            0 => String::new(),
            1 => "match: [{uri: {prefix: /x}}], ".into(),
            _ => "match: [{name: m1, uri: {prefix: /y}}, {uri: {prefix: /z}}], ".into(),
        };
        http.push(format!(
            "{{{name}{matches}route: [{{destination: {{host: b}}}}]}}"
        ));
    }
    let hosts = if rng.chance(90) {
        "[h.example.com]"
    } else {
        "[]"
    };
    let annotations = match rng.below(6) {
        0 => format!(
            "annotations: {{htnn.mosn.io/filterpolicy: '{{\"filters\": {{\"demo\": {{\"config\": {{\"hostName\": \"x-e{}\"}}}}}}}}'}}, ",
            rng.below(2)
        ),
        1 => "annotations: {htnn.mosn.io/filterpolicy: 'not json'}, ".into(),
        2 => "annotations: {htnn.mosn.io/httpfilterpolicy: '{\"targetRef\": {\"sectionName\": \"r0\"}, \"filters\": {\"limitReq\": {\"config\": {\"average\": 3}}}}'}, ".into(),
        _ => String::new(),
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}, {annotations}generation: {}{}}}\nspec: {{gateways: {gateways}, hosts: {hosts}, http: [{}]}}\n",
        1 + rng.below(3),
        timestamp(rng),
        http.join(", ")
    )
}

fn filter_policy(rng: &mut Rng) -> String {
    let kind = if rng.chance(80) {
        "FilterPolicy"
    } else {
        "HTTPFilterPolicy"
    };
    let ns = rng.pick(NAMESPACES);
    let name = rng.pick(&["p0", "p1", "p2", "p3"]);
    let target = rng.pick(VS_NAMES);
    let section = match rng.below(4) {
        0 => format!(
            ", sectionName: {}",
            rng.pick(&["r0", "r1", "shared", "gone"])
        ),
        _ => String::new(),
    };
    let subs = if section.is_empty() && rng.chance(30) {
        format!(
            ", subPolicies: [{{sectionName: {}, filters: {}}}]",
            rng.pick(&["r0", "r1", "gone"]),
            plugins(rng)
        )
    } else {
        String::new()
    };
    let target_kind = if rng.chance(95) {
        "VirtualService"
    } else {
        "HTTPRoute"
    };
    format!(
        "apiVersion: htnn.mosn.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}, generation: {}{}}}\nspec: {{targetRef: {{group: networking.istio.io, kind: {target_kind}, name: {target}{section}}}, filters: {}{subs}}}\n",
        1 + rng.below(3),
        timestamp(rng),
        plugins(rng)
    )
}

fn consumer(rng: &mut Rng) -> String {
    let ns = rng.pick(NAMESPACES);
    let name = rng.pick(&["c0", "c1", "c2"]);
    let spec_name = match rng.below(3) {
        0 => format!("name: {}, ", rng.pick(&["c0", "shared"])),
        _ => String::new(),
    };
    let auth = if rng.chance(90) {
        format!("{{keyAuth: {{config: {{key: k-{}}}}}}}", rng.below(3))
    } else {
        "{}".into()
    };
    format!(
        "apiVersion: htnn.mosn.io/v1\nkind: Consumer\nmetadata: {{name: {name}, namespace: {ns}{}}}\nspec: {{{spec_name}auth: {auth}, filters: {}}}\n",
        timestamp(rng),
        if rng.chance(50) {
            "{demo: {config: {hostName: x-c}}}".to_string()
        } else {
            "{}".into()
        }
    )
}

fn other(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 => format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr, namespace: {}}}\nspec: {{host: b, trafficPolicy: {{loadBalancer: {{simple: {}}}}}}}\n",
            rng.pick(NAMESPACES),
            rng.pick(&["ROUND_ROBIN", "LEAST_REQUEST"])
        ),
        1 => format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se, namespace: a}}\nspec: {{hosts: [b], ports: [{{number: {}, name: http, protocol: HTTP}}], resolution: DNS}}\n",
            80 + rng.below(2)
        ),
        // A user EnvoyFilter, sometimes with the name of a generated one: ours must win.
        2 => format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: {}, namespace: istio-system}}\nspec: {{priority: {}}}\n",
            rng.pick(&["user", "htnn-consumers", "htnn-route.a.v0"]),
            rng.below(3)
        ),
        3 => "apiVersion: htnn.mosn.io/v1\nkind: ServiceRegistry\nmetadata: {name: reg, namespace: a}\nspec: {type: nacos}\n".into(),
        _ => "apiVersion: htnn.mosn.io/v1\nkind: DynamicConfig\nmetadata: {name: dc, namespace: a}\nspec: {type: demo}\n".into(),
    }
}

fn random_object(rng: &mut Rng) -> Object {
    let yaml = match rng.below(10) {
        0 => gateway(rng),
        1..=3 => virtual_service(rng),
        4..=6 => filter_policy(rng),
        7 | 8 => consumer(rng),
        _ => other(rng),
    };
    let mut docs = parse::parse_file(&yaml, false);
    assert_eq!(docs.len(), 1, "{yaml}");
    docs.remove(0)
        .unwrap_or_else(|e| panic!("generated input does not parse: {e}\n{yaml}"))
}

fn changed(before: &Output, after: &Output) -> (BTreeSet<ObjectRef>, BTreeSet<ObjectRef>) {
    fn diff<V: PartialEq>(
        a: &BTreeMap<ObjectRef, V>,
        b: &BTreeMap<ObjectRef, V>,
    ) -> BTreeSet<ObjectRef> {
        a.keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect()
    }
    (
        diff(&before.objects, &after.objects),
        diff(&before.statuses, &after.statuses),
    )
}

fn run_sequence(seed: u64, steps: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let opts = Options::default();
    let mut t = Translator::new(opts.clone());
    t.take_delta();
    let mut input: BTreeMap<ObjectRef, Object> = BTreeMap::new();
    let mut log = Vec::new();
    for step in 0..steps {
        let mut batch = Vec::new();
        for _ in 0..if rng.chance(20) { 1 + rng.below(4) } else { 1 } {
            let delete = !input.is_empty() && rng.chance(25);
            if delete {
                let id = input.keys().nth(rng.below(input.len())).unwrap().clone();
                input.remove(&id);
                log.push(format!("delete {id}"));
                batch.push(Change::Delete(id));
            } else {
                let obj = random_object(&mut rng);
                log.push(format!(
                    "upsert {}",
                    htnn_translators::render::object_json(&obj)
                ));
                input.insert(obj.id.clone(), obj.clone());
                batch.push(Change::Upsert(Arc::new(obj)));
            }
        }
        let before = t.output().clone();
        t.apply(batch);
        let full = translate(&input, &opts);
        let context = || {
            format!(
                "seed {seed}, step {step}; changes so far:\n{}",
                log.join("\n")
            )
        };
        if *t.output() != full {
            let (objects, statuses) = changed(&full, t.output());
            panic!(
                "incremental differs from full in objects {objects:?} and statuses {statuses:?}\n{}",
                context()
            );
        }
        let delta = t.take_delta();
        let (objects, statuses) = changed(&before, t.output());
        assert!(
            objects.is_subset(&delta.objects) && statuses.is_subset(&delta.statuses),
            "delta {delta:?} misses changes {objects:?} / {statuses:?}\n{}",
            context()
        );
    }
}

#[test]
fn incremental_translation_equals_full_translation() {
    let seeds: u64 = std::env::var("HTNN_PROPTEST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    for seed in 0..seeds {
        run_sequence(seed, 50);
    }
}

#[test]
fn reapplying_the_same_objects_changes_nothing() {
    let mut rng = Rng(7);
    // One object per id: an id drawn twice would change on the second round.
    let objects: BTreeMap<ObjectRef, Arc<Object>> = (0..200)
        .map(|_| Arc::new(random_object(&mut rng)))
        .map(|o| (o.id.clone(), o))
        .collect();
    let objects: Vec<Arc<Object>> = objects.into_values().collect();
    let mut t = Translator::new(Options::default());
    t.apply(objects.iter().cloned().map(Change::Upsert));
    t.take_delta();
    // Equal copies, not the same allocations: compared by value.
    t.apply(
        objects
            .iter()
            .map(|o| Change::Upsert(Arc::new((**o).clone()))),
    );
    assert!(t.take_delta().is_empty());
}
