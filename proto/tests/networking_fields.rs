//! Checks that representative Kubernetes-style `spec` JSON for every
//! `istio.networking.v1alpha3` kind parses into the generated types with the
//! upstream (istio/api 1.30) field names, oneofs and enum names.

#![allow(deprecated)] // exercises deprecated-but-supported fields too

use htnn_proto::istio::networking::v1alpha3 as net;
use htnn_proto::istio::r#type::v1beta1 as ty;
use prost::Message;
use serde_json::json;

fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("spec should deserialize")
}

#[test]
fn virtual_service() {
    let vs: net::VirtualService = parse(json!({
        "hosts": ["reviews.prod.svc.cluster.local"],
        "gateways": ["mesh", "istio-system/gw"],
        "exportTo": ["."],
        "http": [{
            "name": "v2",
            "match": [{
                "uri": {"prefix": "/api"},
                "headers": {"x-user": {"exact": "jason"}},
                "withoutHeaders": {"x-skip": {"regex": "y.*"}},
                "queryParams": {"q": {"exact": "1"}},
                "ignoreUriCase": true,
                "sourceLabels": {"app": "web"},
                "port": 8080,
                "statPrefix": "m1"
            }],
            "route": [
                {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 75,
                 "headers": {"request": {"set": {"a": "b"}, "remove": ["c"]}}},
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 25}
            ],
            "rewrite": {"uriRegexRewrite": {"match": "^/api(.*)", "rewrite": "\\1"}},
            "timeout": "1.5s",
            "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx",
                        "retryRemoteLocalities": true, "backoff": "0.25s"},
            "fault": {
                "delay": {"fixedDelay": "5s", "percentage": {"value": 10.0}},
                "abort": {"http2Error": "REFUSED_STREAM", "percentage": {"value": 1.5}}
            },
            "mirror": {"host": "shadow"},
            "mirrors": [{"destination": {"host": "shadow2"}, "percentage": {"value": 50}}],
            "mirrorPercent": 30,
            "mirrorPercentage": {"value": 20.5},
            "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}], "allowOrigin": ["x"],
                           "maxAge": "86400s", "allowCredentials": false, "unmatchedPreflights": "IGNORE"}
        }, {
            "redirect": {"uri": "/new", "derivePort": "FROM_REQUEST_PORT", "redirectCode": 308, "scheme": "https"}
        }, {
            "directResponse": {"status": 503, "body": {"string": "unavailable"}}
        }, {
            "delegate": {"name": "child", "namespace": "ns"}
        }],
        "tls": [{
            "match": [{"sniHosts": ["a.example"], "port": 443, "sourceNamespace": "ns"}],
            "route": [{"destination": {"host": "a.example"}}]
        }],
        "tcp": [{
            "match": [{"port": 27017, "destinationSubnets": ["10.0.0.0/8"], "sourceSubnet": "1.2.3.0/24"}],
            "route": [{"destination": {"host": "mongo", "port": {"number": 5555}}, "weight": 100}]
        }]
    }));
    assert_eq!(vs.export_to, vec!["."]);
    let r = &vs.http[0];
    assert_eq!(r.name, "v2");
    let m = &r.r#match[0];
    assert_eq!(
        m.uri.as_ref().unwrap().match_type,
        Some(net::string_match::MatchType::Prefix("/api".into()))
    );
    assert_eq!(
        m.headers["x-user"].match_type,
        Some(net::string_match::MatchType::Exact("jason".into()))
    );
    assert!(m.without_headers.contains_key("x-skip"));
    assert!(m.ignore_uri_case);
    assert_eq!(m.stat_prefix, "m1");
    assert_eq!(r.route[0].weight, 75);
    assert_eq!(
        r.route[0]
            .destination
            .as_ref()
            .unwrap()
            .port
            .as_ref()
            .unwrap()
            .number,
        9080
    );
    assert_eq!(
        r.route[0]
            .headers
            .as_ref()
            .unwrap()
            .request
            .as_ref()
            .unwrap()
            .set["a"],
        "b"
    );
    let t = r.timeout.as_ref().unwrap();
    assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    assert_eq!(
        r.retries
            .as_ref()
            .unwrap()
            .retry_remote_localities
            .map(|v| v.value),
        Some(true)
    );
    let fault = r.fault.as_ref().unwrap();
    assert!(matches!(
        fault.delay.as_ref().unwrap().http_delay_type,
        Some(net::http_fault_injection::delay::HttpDelayType::FixedDelay(
            _
        ))
    ));
    assert_eq!(
        fault.abort.as_ref().unwrap().error_type,
        Some(net::http_fault_injection::abort::ErrorType::Http2Error(
            "REFUSED_STREAM".into()
        ))
    );
    assert_eq!(r.mirror.as_ref().unwrap().host, "shadow");
    assert_eq!(r.mirrors[0].percentage.as_ref().unwrap().value, 50.0);
    assert_eq!(r.mirror_percent.map(|v| v.value), Some(30));
    assert_eq!(r.mirror_percentage.as_ref().unwrap().value, 20.5);
    let cors = r.cors_policy.as_ref().unwrap();
    assert_eq!(cors.allow_origins.len(), 1);
    assert_eq!(
        cors.unmatched_preflights,
        net::cors_policy::UnmatchedPreflights::Ignore as i32
    );
    let redirect = vs.http[1].redirect.as_ref().unwrap();
    assert_eq!(redirect.redirect_code, 308);
    assert_eq!(
        redirect.redirect_port,
        Some(net::http_redirect::RedirectPort::DerivePort(
            net::http_redirect::RedirectPortSelection::FromRequestPort as i32
        ))
    );
    let dr = vs.http[2].direct_response.as_ref().unwrap();
    assert_eq!(dr.status, 503);
    assert_eq!(
        dr.body.as_ref().unwrap().specifier,
        Some(net::http_body::Specifier::String("unavailable".into()))
    );
    assert_eq!(vs.http[3].delegate.as_ref().unwrap().namespace, "ns");
    assert_eq!(vs.tls[0].r#match[0].sni_hosts, vec!["a.example"]);
    assert_eq!(vs.tcp[0].r#match[0].source_subnet, "1.2.3.0/24");

    // Wire round trip.
    let back = net::VirtualService::decode(vs.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, vs);
}

#[test]
fn destination_rule() {
    let dr: net::DestinationRule = parse(json!({
        "host": "ratings.prod.svc.cluster.local",
        "exportTo": ["*"],
        "workloadSelector": {"matchLabels": {"app": "ratings"}},
        "trafficPolicy": {
            "loadBalancer": {
                "consistentHash": {
                    "httpCookie": {"name": "user", "ttl": "0s", "attributes": [{"name": "SameSite", "value": "Strict"}]},
                    "maglev": {"tableSize": 65537}
                },
                "localityLbSetting": {
                    "enabled": true,
                    "distribute": [{"from": "us-west/*", "to": {"us-west/*": 80, "us-east/*": 20}}],
                    "failoverPriority": ["topology.kubernetes.io/region"]
                },
                "warmup": {"duration": "30s", "minimumPercent": 10, "aggression": 1.5}
            },
            "connectionPool": {
                "tcp": {"maxConnections": 100, "connectTimeout": "0.030s",
                        "tcpKeepalive": {"probes": 3, "time": "7200s", "interval": "75s"},
                        "idleTimeout": "3600s"},
                "http": {"http1MaxPendingRequests": 10, "http2MaxRequests": 1000,
                         "h2UpgradePolicy": "UPGRADE", "useClientProtocol": true, "maxConcurrentStreams": 5}
            },
            "outlierDetection": {"consecutive5xxErrors": 7, "consecutiveGatewayErrors": 0,
                                 "interval": "300s", "baseEjectionTime": "900s", "maxEjectionPercent": 100,
                                 "splitExternalLocalOriginErrors": true},
            "tls": {"mode": "ISTIO_MUTUAL", "sni": "x", "insecureSkipVerify": false, "caCrl": "/crl"},
            "portLevelSettings": [{"port": {"number": 80}, "loadBalancer": {"simple": "LEAST_REQUEST"}}],
            "tunnel": {"protocol": "CONNECT", "targetHost": "1.2.3.4", "targetPort": 443},
            "proxyProtocol": {"version": "V2"},
            "retryBudget": {"percent": 25.0, "minRetryConcurrency": 3}
        },
        "subsets": [{"name": "v1", "labels": {"version": "v1"},
                     "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}]
    }));
    use net::load_balancer_settings::{LbPolicy, SimpleLb, consistent_hash_lb};
    assert_eq!(
        dr.workload_selector.as_ref().unwrap().match_labels["app"],
        "ratings"
    );
    let tp = dr.traffic_policy.as_ref().unwrap();
    let lb = tp.load_balancer.as_ref().unwrap();
    let Some(LbPolicy::ConsistentHash(ch)) = &lb.lb_policy else {
        panic!("expected consistentHash")
    };
    let Some(consistent_hash_lb::HashKey::HttpCookie(cookie)) = &ch.hash_key else {
        panic!("cookie")
    };
    assert_eq!(cookie.name, "user");
    assert_eq!(cookie.attributes[0].value, "Strict");
    assert_eq!(
        ch.hash_algorithm,
        Some(consistent_hash_lb::HashAlgorithm::Maglev(
            consistent_hash_lb::MagLev { table_size: 65537 }
        ))
    );
    let loc = lb.locality_lb_setting.as_ref().unwrap();
    assert_eq!(loc.enabled.map(|v| v.value), Some(true));
    assert_eq!(loc.distribute[0].to["us-east/*"], 20);
    assert_eq!(
        lb.warmup.as_ref().unwrap().aggression.map(|v| v.value),
        Some(1.5)
    );
    let cp = tp.connection_pool.as_ref().unwrap();
    assert_eq!(
        cp.tcp
            .as_ref()
            .unwrap()
            .tcp_keepalive
            .as_ref()
            .unwrap()
            .probes,
        3
    );
    let http = cp.http.as_ref().unwrap();
    assert_eq!(http.http1_max_pending_requests, 10);
    assert_eq!(
        http.h2_upgrade_policy,
        net::connection_pool_settings::http_settings::H2UpgradePolicy::Upgrade as i32
    );
    let od = tp.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx_errors.map(|v| v.value), Some(7));
    assert_eq!(od.consecutive_gateway_errors.map(|v| v.value), Some(0));
    assert_eq!(
        tp.tls.as_ref().unwrap().mode,
        net::client_tls_settings::TlSmode::IstioMutual as i32
    );
    assert_eq!(
        tp.port_level_settings[0]
            .load_balancer
            .as_ref()
            .unwrap()
            .lb_policy,
        Some(LbPolicy::Simple(SimpleLb::LeastRequest as i32))
    );
    assert_eq!(tp.tunnel.as_ref().unwrap().target_port, 443);
    assert_eq!(
        tp.proxy_protocol.as_ref().unwrap().version,
        net::traffic_policy::proxy_protocol::Version::V2 as i32
    );
    assert_eq!(tp.retry_budget.as_ref().unwrap().min_retry_concurrency, 3);
    assert_eq!(dr.subsets[0].labels["version"], "v1");

    // JSON output uses upstream camelCase names and enum names.
    let out = serde_json::to_value(&dr).unwrap();
    assert_eq!(
        out["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"],
        7
    );
    assert_eq!(
        out["subsets"][0]["trafficPolicy"]["loadBalancer"]["simple"],
        "ROUND_ROBIN"
    );
    assert_eq!(
        out["trafficPolicy"]["connectionPool"]["http"]["h2UpgradePolicy"],
        "UPGRADE"
    );
}

#[test]
fn gateway() {
    let gw: net::Gateway = parse(json!({
        "selector": {"istio": "ingressgateway"},
        "servers": [{
            "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
            "hosts": ["ns/*.example.com"],
            "name": "https-server",
            "tls": {"mode": "OPTIONAL_MUTUAL", "credentialNames": ["a", "b"],
                    "caCertCredentialName": "ca", "minProtocolVersion": "TLSV1_2",
                    "tlsCertificates": [{"serverCertificate": "/c", "privateKey": "/k"}],
                    "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"]}
        }, {
            "port": {"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 8080},
            "hosts": ["*"],
            "bind": "0.0.0.0",
            "tls": {"httpsRedirect": true}
        }]
    }));
    assert_eq!(gw.selector["istio"], "ingressgateway");
    let tls = gw.servers[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.mode,
        net::server_tls_settings::TlSmode::OptionalMutual as i32
    );
    assert_eq!(tls.credential_names, vec!["a", "b"]);
    assert_eq!(
        tls.min_protocol_version,
        net::server_tls_settings::TlsProtocol::Tlsv12 as i32
    );
    assert_eq!(tls.tls_certificates[0].private_key, "/k");
    assert_eq!(gw.servers[1].port.as_ref().unwrap().target_port, 8080);
    assert!(gw.servers[1].tls.as_ref().unwrap().https_redirect);
}

#[test]
fn service_entry() {
    let se: net::ServiceEntry = parse(json!({
        "hosts": ["api.example.com"],
        "addresses": ["240.0.0.1"],
        "ports": [{"number": 443, "name": "https", "protocol": "TLS", "targetPort": 8443}],
        "location": "MESH_EXTERNAL",
        "resolution": "DYNAMIC_DNS",
        "endpoints": [{"address": "1.1.1.1", "ports": {"https": 8443}, "weight": 2, "locality": "r/z"}],
        "workloadSelector": {"labels": {"app": "vm"}},
        "exportTo": ["*"],
        "subjectAltNames": ["spiffe://x"]
    }));
    assert_eq!(
        se.resolution,
        net::service_entry::Resolution::DynamicDns as i32
    );
    assert_eq!(
        se.location,
        net::service_entry::Location::MeshExternal as i32
    );
    assert_eq!(se.ports[0].target_port, 8443);
    assert_eq!(se.endpoints[0].ports["https"], 8443);
    assert_eq!(se.workload_selector.as_ref().unwrap().labels["app"], "vm");
}

#[test]
fn sidecar() {
    let sc: net::Sidecar = parse(json!({
        "workloadSelector": {"labels": {"app": "ratings"}},
        "ingress": [{
            "port": {"number": 9080, "protocol": "HTTP", "name": "somename"},
            "defaultEndpoint": "unix:///var/run/app.sock",
            "captureMode": "NONE",
            "tls": {"mode": "SIMPLE"},
            "connectionPool": {"http": {"maxRetries": 2}}
        }],
        "egress": [{"hosts": ["./*", "istio-system/*"], "captureMode": "IPTABLES", "bind": "127.0.0.1"}],
        "inboundConnectionPool": {"tcp": {"maxConnectionDuration": "600s"}},
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY", "egressProxy": {"host": "egress", "port": {"number": 80}}}
    }));
    assert_eq!(
        sc.workload_selector.as_ref().unwrap().labels["app"],
        "ratings"
    );
    assert_eq!(sc.ingress[0].capture_mode, net::CaptureMode::None as i32);
    assert_eq!(sc.ingress[0].port.as_ref().unwrap().number, 9080);
    assert_eq!(
        sc.ingress[0]
            .connection_pool
            .as_ref()
            .unwrap()
            .http
            .as_ref()
            .unwrap()
            .max_retries,
        2
    );
    assert_eq!(sc.egress[0].capture_mode, net::CaptureMode::Iptables as i32);
    assert_eq!(sc.egress[0].hosts.len(), 2);
    assert!(sc.inbound_connection_pool.is_some());
    assert_eq!(
        sc.outbound_traffic_policy
            .as_ref()
            .unwrap()
            .egress_proxy
            .as_ref()
            .unwrap()
            .host,
        "egress"
    );
}

#[test]
fn envoy_filter() {
    let ef: net::EnvoyFilter = parse(json!({
        "workloadSelector": {"labels": {"app": "reviews"}},
        "targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}],
        "priority": -10,
        "configPatches": [{
            "applyTo": "HTTP_FILTER",
            "match": {
                "context": "SIDECAR_INBOUND",
                "proxy": {"proxyVersion": "^1\\.30.*", "metadata": {"k": "v"}},
                "listener": {
                    "portNumber": 8080,
                    "filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager",
                                               "subFilter": {"name": "envoy.filters.http.router"}},
                                    "destinationPort": 8080}
                }
            },
            "patch": {
                "operation": "INSERT_BEFORE",
                "filterClass": "AUTHZ",
                "value": {"name": "envoy.lua", "typed_config": {"@type": "type.googleapis.com/x", "n": 1}}
            }
        }, {
            "applyTo": "HTTP_ROUTE",
            "match": {"context": "GATEWAY",
                      "routeConfiguration": {"portNumber": 443, "gateway": "ns/gw",
                                             "vhost": {"name": "a:443", "domainName": "a",
                                                       "route": {"action": "DIRECT_RESPONSE"}}}},
            "patch": {"operation": "MERGE", "value": {"timeout": "0s"}}
        }, {
            "applyTo": "CLUSTER",
            "match": {"context": "WAYPOINT",
                      "waypoint": {"portNumber": 80, "filter": {"name": "f", "subFilter": {"name": "s"}}}},
            "patch": {"operation": "REMOVE"}
        }, {
            "applyTo": "CLUSTER",
            "match": {"cluster": {"service": "foo", "portNumber": 80, "subset": "v1"}},
            "patch": {"operation": "ADD", "value": {"name": "c"}}
        }]
    }));
    use net::envoy_filter::{ApplyTo, PatchContext, envoy_config_object_match::ObjectTypes, patch};
    assert_eq!(
        ef.workload_selector.as_ref().unwrap().labels["app"],
        "reviews"
    );
    assert_eq!(
        ef.target_refs[0],
        ty::PolicyTargetReference {
            group: "gateway.networking.k8s.io".into(),
            kind: "Gateway".into(),
            name: "gw".into(),
            namespace: String::new(),
        }
    );
    assert_eq!(ef.priority, -10);
    let p0 = &ef.config_patches[0];
    assert_eq!(p0.apply_to, ApplyTo::HttpFilter as i32);
    let m0 = p0.r#match.as_ref().unwrap();
    assert_eq!(m0.context, PatchContext::SidecarInbound as i32);
    assert_eq!(m0.proxy.as_ref().unwrap().metadata["k"], "v");
    let Some(ObjectTypes::Listener(l)) = &m0.object_types else {
        panic!("listener")
    };
    let fc = l.filter_chain.as_ref().unwrap();
    assert_eq!(fc.destination_port, 8080);
    assert_eq!(
        fc.filter
            .as_ref()
            .unwrap()
            .sub_filter
            .as_ref()
            .unwrap()
            .name,
        "envoy.filters.http.router"
    );
    let patch0 = p0.patch.as_ref().unwrap();
    assert_eq!(patch0.operation, patch::Operation::InsertBefore as i32);
    assert_eq!(patch0.filter_class, patch::FilterClass::Authz as i32);
    let value = serde_json::to_value(patch0.value.as_ref().unwrap()).unwrap();
    assert_eq!(value["typed_config"]["@type"], "type.googleapis.com/x");

    let m1 = ef.config_patches[1].r#match.as_ref().unwrap();
    let Some(ObjectTypes::RouteConfiguration(rc)) = &m1.object_types else {
        panic!("routeConfiguration")
    };
    let vhost = rc.vhost.as_ref().unwrap();
    assert_eq!(vhost.domain_name, "a");
    assert_eq!(
        vhost.route.as_ref().unwrap().action,
        net::envoy_filter::route_configuration_match::route_match::Action::DirectResponse as i32
    );
    let m2 = ef.config_patches[2].r#match.as_ref().unwrap();
    assert_eq!(m2.context, PatchContext::Waypoint as i32);
    assert!(matches!(&m2.object_types, Some(ObjectTypes::Waypoint(w)) if w.port_number == 80));
    let m3 = ef.config_patches[3].r#match.as_ref().unwrap();
    assert!(matches!(&m3.object_types, Some(ObjectTypes::Cluster(c)) if c.subset == "v1"));

    let back = net::EnvoyFilter::decode(ef.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, ef);
    assert_eq!(
        serde_json::to_value(&ef).unwrap()["targetRefs"][0]["kind"],
        "Gateway"
    );
}

#[test]
fn workload_entry_and_group() {
    let we: net::WorkloadEntry = parse(json!({
        "address": "2.2.2.2", "ports": {"http": 8080}, "labels": {"app": "vm"},
        "network": "n1", "locality": "r/z/s", "weight": 3, "serviceAccount": "sa"
    }));
    assert_eq!(we.service_account, "sa");
    assert_eq!(we.weight, 3);

    let wg: net::WorkloadGroup = parse(json!({
        "metadata": {"labels": {"app": "vm"}, "annotations": {"a": "b"}},
        "template": {"serviceAccount": "sa", "network": "n1"},
        "probe": {"initialDelaySeconds": 5, "periodSeconds": 4, "failureThreshold": 3,
                  "httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTPS",
                              "httpHeaders": [{"name": "h", "value": "v"}]}}
    }));
    assert_eq!(wg.metadata.as_ref().unwrap().annotations["a"], "b");
    assert_eq!(wg.template.as_ref().unwrap().network, "n1");
    let probe = wg.probe.as_ref().unwrap();
    assert_eq!(probe.initial_delay_seconds, 5);
    let Some(net::readiness_probe::HealthCheckMethod::HttpGet(h)) = &probe.health_check_method
    else {
        panic!("httpGet")
    };
    assert_eq!(h.http_headers[0].value, "v");

    for (spec, want) in [
        (json!({"tcpSocket": {"port": 22}}), "tcp"),
        (json!({"exec": {"command": ["true"]}}), "exec"),
        (json!({"grpc": {"port": 9000, "service": "s"}}), "grpc"),
    ] {
        let p: net::ReadinessProbe = parse(spec);
        let got = match p.health_check_method {
            Some(net::readiness_probe::HealthCheckMethod::TcpSocket(_)) => "tcp",
            Some(net::readiness_probe::HealthCheckMethod::Exec(_)) => "exec",
            Some(net::readiness_probe::HealthCheckMethod::Grpc(_)) => "grpc",
            _ => "other",
        };
        assert_eq!(got, want);
    }
}

#[test]
fn type_selector() {
    let s: ty::WorkloadSelector = parse(json!({"matchLabels": {"app": "x"}}));
    assert_eq!(s.match_labels["app"], "x");
    let p: ty::PortSelector = parse(json!({"number": 8080}));
    assert_eq!(p.number, 8080);
    assert_eq!(ty::WorkloadMode::ClientAndServer as i32, 3);
}
