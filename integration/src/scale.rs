//! Generated inputs for the control-plane benchmarks: N VirtualServices with two named http
//! routes each behind one Gateway, two FilterPolicies per VirtualService (one on the whole
//! VirtualService, one on a route), one Consumer per two VirtualServices, and one
//! DestinationRule and one ServiceEntry per VirtualService.
//!
//! istio objects and HTNN objects go to separate files so that the istio part alone can be
//! given to istiod's own `fs://` source for comparison.

use std::path::Path;

/// Namespaces the objects are spread over.
pub const NAMESPACES: usize = 100;
/// Objects of one kind per file.
pub const PER_FILE: usize = 100;

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub virtual_services: usize,
    /// FilterPolicies and Consumers.
    pub htnn: bool,
    /// DestinationRules and ServiceEntries.
    pub extras: bool,
}

impl Shape {
    pub fn consumers(&self) -> usize {
        self.virtual_services / 2
    }
}

pub fn namespace(i: usize) -> String {
    format!("team-{}", i % NAMESPACES)
}

pub const GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*']
";

/// VirtualService `vs-<i>`; `timeout` varies the content for edit benchmarks.
pub fn virtual_service(i: usize, timeout: &str) -> String {
    let ns = namespace(i);
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs-{i}, namespace: {ns}}}
spec:
  gateways: [istio-system/edge]
  hosts: [vs-{i}.example.com]
  http:
  - name: r-{i}-a
    match: [{{uri: {{prefix: /a}}}}]
    timeout: {timeout}
    route: [{{destination: {{host: svc-{i}.{ns}.svc.cluster.local, port: {{number: 8080}}}}}}]
  - name: r-{i}-b
    match: [{{uri: {{prefix: /b}}}}]
    route: [{{destination: {{host: svc-{i}.{ns}.svc.cluster.local, port: {{number: 8080}}}}}}]
"
    )
}

pub fn destination_rule(i: usize) -> String {
    let ns = namespace(i);
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: dr-{i}, namespace: {ns}}}
spec:
  host: svc-{i}.{ns}.svc.cluster.local
  trafficPolicy:
    connectionPool: {{tcp: {{maxConnections: 100}}}}
    loadBalancer: {{simple: LEAST_REQUEST}}
"
    )
}

pub fn service_entry(i: usize) -> String {
    let ns = namespace(i);
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: se-{i}, namespace: {ns}}}
spec:
  hosts: [svc-{i}.{ns}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.{}}}]
",
        1 + i % 250
    )
}

/// The whole-VirtualService policy of `vs-<i>`; `average` varies its plugin config.
pub fn vs_policy(i: usize, average: u32) -> String {
    let ns = namespace(i);
    format!(
        "apiVersion: htnn.mosn.io/v1
kind: FilterPolicy
metadata: {{name: fp-vs-{i}, namespace: {ns}}}
spec:
  targetRef: {{group: networking.istio.io, kind: VirtualService, name: vs-{i}}}
  filters:
    keyAuth: {{config: {{keys: [{{name: x-api-key}}]}}}}
    limitReq: {{config: {{average: {average}, period: 1s, burst: 10}}}}
"
    )
}

/// The policy on route `r-<i>-a`.
pub fn route_policy(i: usize) -> String {
    let ns = namespace(i);
    format!(
        "apiVersion: htnn.mosn.io/v1
kind: FilterPolicy
metadata: {{name: fp-route-{i}, namespace: {ns}}}
spec:
  targetRef: {{group: networking.istio.io, kind: VirtualService, name: vs-{i}, sectionName: r-{i}-a}}
  filters:
    consumerRestriction: {{config: {{denyIfNoConsumer: true}}}}
    demo: {{config: {{hostName: x-route-{i}}}}}
"
    )
}

pub fn consumer(j: usize) -> String {
    let ns = namespace(j);
    format!(
        "apiVersion: htnn.mosn.io/v1
kind: Consumer
metadata: {{name: c-{j}, namespace: {ns}}}
spec:
  auth:
    keyAuth: {{config: {{key: key-{j}}}}}
  filters:
    demo: {{config: {{hostName: x-consumer-{j}}}}}
"
    )
}

/// The file holding object `i` of a kind: `<prefix>-<i / PER_FILE>.yaml`.
pub fn file_of(prefix: &str, i: usize) -> String {
    format!("{prefix}-{:04}.yaml", i / PER_FILE)
}

fn write_kind(
    dir: &Path,
    prefix: &str,
    count: usize,
    doc: impl Fn(usize) -> String,
) -> std::io::Result<()> {
    let mut file = String::new();
    for i in 0..count {
        if !file.is_empty() {
            file.push_str("---\n");
        }
        file.push_str(&doc(i));
        if (i + 1) % PER_FILE == 0 || i + 1 == count {
            std::fs::write(dir.join(file_of(prefix, i)), &file)?;
            file.clear();
        }
    }
    Ok(())
}

/// Writes the istio objects of `shape` into `dir`.
pub fn write_istio(dir: &Path, shape: Shape) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("gateway.yaml"), GATEWAY)?;
    write_kind(dir, "vs", shape.virtual_services, |i| {
        virtual_service(i, "10s")
    })?;
    if shape.extras {
        write_kind(dir, "dr", shape.virtual_services, destination_rule)?;
        write_kind(dir, "se", shape.virtual_services, service_entry)?;
    }
    Ok(())
}

/// Writes the HTNN objects of `shape` into `dir`.
pub fn write_htnn(dir: &Path, shape: Shape) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if shape.htnn {
        write_kind(dir, "fp-vs", shape.virtual_services, |i| vs_policy(i, 100))?;
        write_kind(dir, "fp-route", shape.virtual_services, route_policy)?;
        write_kind(dir, "consumer", shape.consumers(), consumer)?;
    }
    Ok(())
}

/// Writes everything of `shape` into `dir`.
pub fn write_all(dir: &Path, shape: Shape) -> std::io::Result<()> {
    write_istio(dir, shape)?;
    write_htnn(dir, shape)
}
