//! Propagation benchmark: how long after a file edit of ONE VirtualService istiod has the
//! edit (in the store `/debug/configz` lists, with a push queued), through `htnn serve
//! --config-dir` (istiod with `configSources: [{address: xds://<htnn>}]`) and, side by side,
//! through istiod's own file source (`configSources: [{address: fs:///dir}]`) reading the
//! same istio objects ([`scale::write_istio`]: one Gateway plus, per VirtualService, a
//! DestinationRule and a ServiceEntry).
//!
//! # What each path does with an edit
//!
//! - **htnn serve** watches its directory with inotify (`notify`, non-recursive), waits for
//!   100 ms without further events (`--debounce`, trailing), re-reads the directory but parses
//!   only files whose content hash changed, and pushes the full VirtualService set over MCP;
//!   istiod's MCP client (`pkg/adsc`) then writes the changed objects into its in-memory store.
//! - **istiod's `fs://` source** (`pilot/pkg/config/kube/file`, `pkg/kube/krt/files`) also
//!   watches with inotify (fsnotify, recursive). The first event starts a fixed 50 ms timer
//!   (not reset by later events); when it fires istiod re-reads and re-parses *every* `.yaml`
//!   file under the directory and resets its krt collection to the result, which diffs it
//!   against the previous state. There is no periodic rescan.
//!
//! Both therefore react to the same inotify event; the cost after that differs (one file
//! parsed plus an MCP push of the whole type, versus every file re-parsed).
//!
//! # How an edit is made and detected
//!
//! An edit rewrites the file holding VirtualService `i` ([`scale::file_of`]) with that one
//! document's first route timeout changed to a value no other object has (`11s`, `12s`, …).
//! The new file is written next to the config directory and renamed into it (atomic, as a
//! deployment tool would), so each watcher sees a single complete file. The clock starts just
//! before the rename.
//!
//! istiod has no per-object debug endpoint: `/debug/configz` lists every object of its
//! config store, converted and serialised on each request (≈ 60 ms and 1 MB at 1,000
//! VirtualServices, ten times that at 10,000). Polling it would give a resolution of twice its
//! cost and keep istiod busy serialising while it should be processing the edit. So the clock
//! stops on a cheap signal and configz confirms it:
//!
//! 1. every [`METRICS_POLL`] the benchmark reads istiod's `/metrics` (≈ 12 KB, ~1 ms) for
//!    `pilot_inbound_updates{type="config"}`, which istiod increments when a config change
//!    reaches its push queue (`DiscoveryServer::ConfigUpdate`; for VirtualServices it is called
//!    by the krt VirtualService controller, one or two krt hops after the object is in the
//!    store that configz lists);
//! 2. when the counter moved, one configz request checks the raw body for the edit's unique
//!    `"timeout":"<value>"`. The store is updated before the counter, so if the edit's own
//!    update was counted, configz shows it; if not (the counter moved for something else),
//!    polling goes on.
//!
//! A sample is therefore "the edit is in istiod's store and istiod has queued a push for it",
//! between the start of the last metrics poll that did not see the counter move and the start
//! of the first that did: the midpoint of that interval, ± half its width (the *resolution*,
//! reported per path; about [`METRICS_POLL`] plus one metrics request). Should the counter not
//! move for an edit, a configz request every [`CONFIGZ_FALLBACK`] still finds it, with that
//! coarser resolution; such samples are counted. The first configz body that shows the edit is
//! then parsed in full (after the clock stopped) to check that it is VirtualService `i` that
//! changed and that no object was lost or added.
//!
//! Between edits the benchmark waits for rest, so each edit starts from idle and istiod's
//! own push (debounced after the store update) does not overlap the next edit: over one
//! [`IDLE_WINDOW`], istiod and htnn serve must each use at most [`IDLE_CPU_FRACTION`] of a
//! core above what they use when nothing happens (measured once after startup), and all other
//! processes on the machine together at most [`FOREIGN_CPU_LIMIT`] (a compiler running next
//! to the benchmark would distort it). Edits that start without rest after
//! [`SETTLE_TIMEOUT`] are counted as *unsettled*.
//!
//! The two paths run one after the other (htnn first), each with a fresh istiod and a fresh
//! copy of the objects, sharing one empty kube-apiserver (istiod cannot start without one;
//! it only reads it). Sequential runs keep the two paths from competing for the cores.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::env::{Binaries, Htnn, Istiod, IstiodOptions};
use crate::kube::{KUBE_READY_TIMEOUT, Kube};
use crate::process::tail_file;
use crate::scale::{self, PER_FILE, Shape};
use crate::{free_ports, http, loopback, percentile};

/// Pause between two reads of istiod's `/metrics` while waiting for an edit.
pub const METRICS_POLL: Duration = Duration::from_millis(5);
/// While waiting for an edit, configz is also read this often, whatever the metrics say.
pub const CONFIGZ_FALLBACK: Duration = Duration::from_secs(2);
/// istiod's counter of config changes that reached its push queue.
const CONFIG_UPDATES: &str = "pilot_inbound_updates{type=\"config\"}";
/// A process counts as idle when it used less than this share of one core…
pub const IDLE_CPU_FRACTION: f64 = 0.05;
/// … over this window.
pub const IDLE_WINDOW: Duration = Duration::from_millis(300);
/// Other processes on the machine (a compiler, say) may use at most this share of a core
/// for the machine to count as at rest.
pub const FOREIGN_CPU_LIMIT: f64 = 0.25;
/// Longest wait for rest between edits; after that the next edit starts anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one edit to show up.
const EDIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Startup at 10,000 VirtualServices takes minutes on a small machine.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(900);
const HTNN_READY_TIMEOUT: Duration = Duration::from_secs(300);
/// One configz request; at 10,000 VirtualServices it is tens of MB.
const CONFIGZ_TIMEOUT: Duration = Duration::from_secs(60);
/// Linux reports CPU time in /proc in units of USER_HZ, which is 100 on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;
const LOG_TAIL_BYTES: u64 = 6_000;

/// Which way the objects reach istiod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `htnn serve --config-dir`, istiod reading it over MCP (`xds://`).
    Htnn,
    /// istiod's own file source (`fs://`).
    Fs,
    /// [`Source::Htnn`] with HTNN objects next to the istio ones ([`scale::write_htnn`]: two
    /// FilterPolicies per VirtualService, a Consumer per two), so an edit also goes through
    /// policy translation. istiod's file source has no equivalent.
    HtnnPolicies,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Htnn => "htnn",
            Source::Fs => "fs",
            Source::HtnnPolicies => "htnn+policies",
        }
    }
}

/// The measurements of one path at one size.
#[derive(Clone, Debug)]
pub struct PathStats {
    /// Edit → istiod has it, per edit in order, milliseconds (midpoint estimates; see the
    /// module docs).
    pub samples_ms: Vec<f64>,
    pub median_ms: f64,
    pub p90_ms: f64,
    /// Median width of the detection interval (each sample is ± half of it).
    pub resolution_ms: f64,
    /// From spawning istiod until configz holds every object (for the htnn path, htnn serve
    /// was already ready: see [`PathStats::htnn_ready`]).
    pub istiod_startup: Duration,
    /// From spawning htnn serve until its `/readyz` answers 200 (htnn path only).
    pub htnn_ready: Option<Duration>,
    /// One configz request at rest (median of three) and its size.
    pub configz_ms: f64,
    pub configz_bytes: usize,
    /// Edits that started without rest (see the module docs) after the settle timeout.
    pub unsettled: usize,
    /// Edits found by the periodic configz request rather than after istiod's counter moved
    /// (coarser resolution; see the module docs).
    pub fallbacks: usize,
}

/// One size, both paths.
#[derive(Clone, Debug)]
pub struct Row {
    pub virtual_services: usize,
    /// Objects istiod holds: 1 Gateway + VirtualServices + DestinationRules + ServiceEntries.
    pub objects: usize,
    pub htnn: PathStats,
    pub fs: PathStats,
    /// [`Source::HtnnPolicies`], when asked for ([`run_with`]).
    pub htnn_policies: Option<PathStats>,
}

impl Row {
    /// Median htnn / median fs.
    pub fn ratio(&self) -> f64 {
        self.htnn.median_ms / self.fs.median_ms
    }
}

/// For every size in `sizes` (VirtualServices), `edits` edits through each path. Progress
/// goes to stderr. Needs the binaries of [`Binaries::from_env`].
pub async fn run(sizes: &[usize], edits: usize) -> anyhow::Result<Vec<Row>> {
    run_with(sizes, edits, false).await
}

/// [`run`], with `htnn_policies` also the [`Source::HtnnPolicies`] path (after the others).
pub async fn run_with(
    sizes: &[usize],
    edits: usize,
    htnn_policies: bool,
) -> anyhow::Result<Vec<Row>> {
    if edits == 0 {
        bail!("need at least one edit");
    }
    if let Some(&n) = sizes.iter().find(|&&n| n < edits) {
        bail!("{n} VirtualServices are fewer than {edits} edits (each edit changes another one)");
    }
    let binaries = Binaries::from_env()?;
    let tmp = tempfile::Builder::new()
        .prefix("htnn-propagation-")
        .tempdir()?;
    let kube = Kube::start(
        &binaries.kube_apiserver,
        &binaries.etcd,
        &tmp.path().join("kube"),
        KUBE_READY_TIMEOUT,
    )
    .await?;
    let mut rows = Vec::new();
    for &n in sizes {
        let dir = tmp.path().join(n.to_string());
        let htnn = measure(&binaries, &kube, &dir.join("htnn"), Source::Htnn, n, edits).await;
        let htnn = htnn.with_context(|| format!("htnn path at {n} VirtualServices"))?;
        let fs = measure(&binaries, &kube, &dir.join("fs"), Source::Fs, n, edits).await;
        let fs = fs.with_context(|| format!("fs path at {n} VirtualServices"))?;
        let mut policies = None;
        if htnn_policies {
            let source = Source::HtnnPolicies;
            let stats = measure(&binaries, &kube, &dir.join("policies"), source, n, edits).await;
            policies =
                Some(stats.with_context(|| format!("htnn+policies at {n} VirtualServices"))?);
        }
        rows.push(Row {
            virtual_services: n,
            objects: expected_objects(n),
            htnn,
            fs,
            htnn_policies: policies,
        });
    }
    Ok(rows)
}

/// Prints `rows` as a table on stdout.
pub fn print(rows: &[Row]) {
    let edits = rows.first().map_or(0, |r| r.htnn.samples_ms.len());
    println!(
        "Propagation of one VirtualService edit: file rename -> istiod has it \
         ({edits} edits per path; ms)"
    );
    println!("htnn = istiod <- xds:// <- htnn serve --config-dir; fs = istiod's own fs:// source");
    println!();
    println!(
        "{:>8} {:>8} | {:>11} {:>9} {:>7} | {:>9} {:>7} {:>7} | {:>8}",
        "VS", "objects", "htnn median", "p90", "res", "fs median", "p90", "res", "htnn/fs"
    );
    for r in rows {
        println!(
            "{:>8} {:>8} | {:>11.0} {:>9.0} {:>7.0} | {:>9.0} {:>7.0} {:>7.0} | {:>8.2}",
            r.virtual_services,
            r.objects,
            r.htnn.median_ms,
            r.htnn.p90_ms,
            r.htnn.resolution_ms,
            r.fs.median_ms,
            r.fs.p90_ms,
            r.fs.resolution_ms,
            r.ratio()
        );
    }
    println!();
    println!(
        "sample = edit -> in istiod's store with a push queued (pilot_inbound_updates), confirmed \
         by configz; res = median width of the detection interval (sample = its midpoint, +- res/2)"
    );
    println!();
    println!(
        "{:>8} | {:>10} {:>12} {:>11} | {:>10} {:>11} | {:>9} | {:>9} {:>9}",
        "VS",
        "htnn ready",
        "istiod htnn",
        "configz ms",
        "istiod fs",
        "configz ms",
        "configz",
        "unsettled",
        "fallbacks"
    );
    for r in rows {
        println!(
            "{:>8} | {:>9.1}s {:>11.1}s {:>11.0} | {:>9.1}s {:>11.0} | {:>7.1}MB | {:>9} {:>9}",
            r.virtual_services,
            r.htnn.htnn_ready.unwrap_or_default().as_secs_f64(),
            r.htnn.istiod_startup.as_secs_f64(),
            r.htnn.configz_ms,
            r.fs.istiod_startup.as_secs_f64(),
            r.fs.configz_ms,
            r.fs.configz_bytes as f64 / 1e6,
            format!("{}/{}", r.htnn.unsettled, r.fs.unsettled),
            format!("{}/{}", r.htnn.fallbacks, r.fs.fallbacks),
        );
    }
    if rows.iter().any(|r| r.htnn_policies.is_some()) {
        println!();
        println!(
            "htnn+policies = htnn path with 2 FilterPolicies per VirtualService and 1 Consumer \
             per 2 (istiod's fs:// has no equivalent; ratio against fs above)"
        );
        println!(
            "{:>8} | {:>11} {:>9} {:>7} | {:>8} | {:>10} {:>13}",
            "VS", "median", "p90", "res", "x/fs", "htnn ready", "istiod"
        );
        for r in rows {
            if let Some(p) = &r.htnn_policies {
                println!(
                    "{:>8} | {:>11.0} {:>9.0} {:>7.0} | {:>8.2} | {:>9.1}s {:>12.1}s",
                    r.virtual_services,
                    p.median_ms,
                    p.p90_ms,
                    p.resolution_ms,
                    p.median_ms / r.fs.median_ms,
                    p.htnn_ready.unwrap_or_default().as_secs_f64(),
                    p.istiod_startup.as_secs_f64()
                );
            }
        }
    }
    println!();
    println!(
        "htnn ready = htnn serve spawn -> /readyz 200; istiod x = istiod spawn -> configz holds \
         every object; configz ms = one /debug/configz request at rest"
    );
    println!(
        "unsettled = edits (htnn/fs) after which the processes were not at rest within \
         {SETTLE_TIMEOUT:?}; fallbacks = edits found by the {CONFIGZ_FALLBACK:?} configz poll \
         instead of istiod's config-update counter"
    );
}

/// 1 Gateway + one VirtualService, DestinationRule and ServiceEntry per VirtualService.
fn expected_objects(n: usize) -> usize {
    1 + 3 * n
}

/// The VirtualService changed by edit `k` of `edits`: the middle of the `k`-th of `edits`
/// equal stretches, so edits are spread over the files and each changes another object.
fn edited_vs(k: usize, n: usize, edits: usize) -> usize {
    let stride = n / edits;
    k * stride + stride / 2
}

/// The text of VirtualService file `file` ([`scale::file_of`]) for `n` VirtualServices, with
/// the route timeouts in `timeouts` (others keep `10s`, as [`scale::write_istio`] wrote them).
fn vs_file(n: usize, file: usize, timeouts: &BTreeMap<usize, String>) -> String {
    let docs: Vec<String> = (file * PER_FILE..((file + 1) * PER_FILE).min(n))
        .map(|i| scale::virtual_service(i, timeouts.get(&i).map_or("10s", String::as_str)))
        .collect();
    docs.join("---\n")
}

/// Everything one path runs; dropping it stops the processes.
struct Running {
    istiod: Istiod,
    htnn: Option<Htnn>,
    /// The processes that must be at rest before an edit.
    rest: Rest,
}

impl Running {
    fn logs(&self) -> String {
        let mut out = format!(
            "----- istiod log -----\n{}",
            tail_file(&self.istiod.workdir.join("istiod.log"), LOG_TAIL_BYTES)
        );
        if let Some(h) = &self.htnn {
            out.push_str(&format!(
                "\n----- htnn serve log -----\n{}",
                tail_file(h.log_path(), LOG_TAIL_BYTES)
            ));
        }
        out
    }

    fn stop(mut self) {
        self.istiod.process().terminate(Duration::from_secs(5));
        if let Some(h) = self.htnn.as_mut() {
            h.process().terminate(Duration::from_secs(5));
        }
    }
}

/// Starts one path on a fresh copy of the objects under `dir` and measures `edits` edits.
async fn measure(
    binaries: &Binaries,
    kube: &Kube,
    dir: &Path,
    source: Source,
    n: usize,
    edits: usize,
) -> anyhow::Result<PathStats> {
    let config = dir.join("config");
    let shape = Shape {
        virtual_services: n,
        htnn: source == Source::HtnnPolicies,
        extras: true,
    };
    scale::write_all(&config, shape)?;
    let name = source.name();
    eprintln!("[{n} VS, {name}] starting");
    let mut running = start(binaries, kube, dir, &config, source).await?;
    let result = edit_loop(&mut running, dir, &config, source, n, edits).await;
    let result = result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", running.logs()));
    running.stop();
    result
}

async fn start(
    binaries: &Binaries,
    kube: &Kube,
    dir: &Path,
    config: &Path,
    source: Source,
) -> anyhow::Result<Running> {
    let (htnn, address) = match source {
        Source::Htnn | Source::HtnnPolicies => {
            let ports = free_ports(2)?;
            let htnn = Htnn::start(
                &binaries.htnn,
                config,
                loopback(ports[0]),
                loopback(ports[1]),
                &dir.join("htnn.log"),
                HTNN_READY_TIMEOUT,
            )
            .await?;
            let address = format!("xds://{}", htnn.xds_addr);
            (Some(htnn), address)
        }
        // `config` is absolute (under the temporary directory), so this is fs:///…
        Source::Fs => (None, format!("fs://{}", config.display())),
    };
    let istiod = Istiod::start_with_source(
        &binaries.istiod,
        &dir.join("istiod"),
        &address,
        kube.kubeconfig(),
        &IstiodOptions::default(),
        STARTUP_TIMEOUT,
    )
    .await?;
    let mut istiod = istiod;
    let mut pids = vec![("istiod", istiod.process().pid())];
    if let Some(h) = &htnn {
        pids.push(("htnn", h.pid()));
    }
    Ok(Running {
        istiod,
        htnn,
        rest: Rest::new(pids),
    })
}

async fn edit_loop(
    running: &mut Running,
    dir: &Path,
    config: &Path,
    source: Source,
    n: usize,
    edits: usize,
) -> anyhow::Result<PathStats> {
    let name = source.name();
    let addr = running.istiod.http_addr;
    // istiod opens its xDS port once the source synced; configz holding everything is the
    // startup that matters here (istiod's ready_after counts from its spawn).
    let spawned = Instant::now() - running.istiod.ready_after;
    let total = wait_complete(addr, n, spawned + STARTUP_TIMEOUT).await?;
    let istiod_startup = spawned.elapsed();
    eprintln!(
        "[{n} VS, {name}] istiod holds all {total} objects after {:.1}s",
        istiod_startup.as_secs_f64()
    );
    let background = running.rest.calibrate().await;
    eprintln!("[{n} VS, {name}] {background}");
    let (configz_ms, configz_bytes) = configz_cost(addr).await?;

    let staged = dir.join("staged.yaml");
    let mut timeouts = BTreeMap::new();
    let mut samples_ms = Vec::new();
    let mut widths_ms = Vec::new();
    let mut unsettled = 0;
    let mut fallbacks = 0;
    for k in 0..edits {
        let i = edited_vs(k, n, edits);
        let timeout = format!("{}s", 11 + k);
        timeouts.insert(i, timeout.clone());
        let file = scale::file_of("vs", i);
        std::fs::write(&staged, vs_file(n, i / PER_FILE, &timeouts))?;
        let needle = format!("\"timeout\":\"{timeout}\"");
        let counted = config_updates(running.istiod.monitoring_addr).await?;
        let t0 = Instant::now();
        std::fs::rename(&staged, config.join(&file))?;
        let seen = wait_visible(&running.istiod, &needle, t0, counted)
            .await
            .with_context(|| format!("edit {k}: vs-{i} in {file} (timeout {timeout})"))?;
        verify(&seen.body, n, total, i, &timeout).with_context(|| format!("edit {k}: vs-{i}"))?;
        let (mid, width) = (ms(seen.mid), ms(seen.width));
        eprintln!(
            "[{n} VS, {name}] edit {k:>2}: vs-{i} visible after {mid:.0} ms (+- {:.0}){}",
            width / 2.0,
            if seen.by_fallback {
                " (configz fallback)"
            } else {
                ""
            }
        );
        samples_ms.push(mid);
        widths_ms.push(width);
        fallbacks += usize::from(seen.by_fallback);
        if let Err(busy) = running.rest.wait().await {
            eprintln!("[{n} VS, {name}] not at rest after {SETTLE_TIMEOUT:?}: {busy}");
            unsettled += 1;
        }
    }
    Ok(PathStats {
        median_ms: percentile(&samples_ms, 0.5),
        p90_ms: percentile(&samples_ms, 0.9),
        resolution_ms: percentile(&widths_ms, 0.5),
        samples_ms,
        istiod_startup,
        htnn_ready: running.htnn.as_ref().map(|h| h.ready_after),
        configz_ms,
        configz_bytes,
        unsettled,
        fallbacks,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn configz(addr: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let r = http::get(addr, "/debug/configz", CONFIGZ_TIMEOUT).await?;
    if r.status != 200 {
        bail!("/debug/configz answered {}: {}", r.status, r.text());
    }
    Ok(r.body)
}

/// Counts of the kinds the benchmark wrote, from a configz body.
fn kind_counts(body: &[u8]) -> anyhow::Result<(Vec<Value>, BTreeMap<String, usize>)> {
    let list = match serde_json::from_slice(body).context("configz is not JSON")? {
        Value::Array(list) => list,
        Value::Null => Vec::new(),
        _ => bail!("configz is not a list"),
    };
    let mut counts = BTreeMap::new();
    for o in &list {
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
        *counts.entry(kind.to_string()).or_insert(0) += 1;
    }
    Ok((list, counts))
}

/// Whether `counts` holds exactly the istio objects [`scale::write_istio`] wrote for `n`
/// (other kinds, such as EnvoyFilters generated from HTNN policies, are not looked at).
fn complete(counts: &BTreeMap<String, usize>, n: usize) -> Result<(), String> {
    for (kind, want) in [
        ("Gateway", 1),
        ("VirtualService", n),
        ("DestinationRule", n),
        ("ServiceEntry", n),
    ] {
        let have = counts.get(kind).copied().unwrap_or(0);
        if have != want {
            return Err(format!("{have} of {want} {kind}s"));
        }
    }
    Ok(())
}

/// Polls configz (every 500 ms) until it holds every object, or `deadline`. Returns the
/// number of objects it holds then.
async fn wait_complete(addr: SocketAddr, n: usize, deadline: Instant) -> anyhow::Result<usize> {
    loop {
        let reason = match configz(addr).await {
            Ok(body) => {
                let (list, counts) = kind_counts(&body)?;
                match complete(&counts, n) {
                    Ok(()) => return Ok(list.len()),
                    Err(reason) => reason,
                }
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("configz incomplete at the deadline: {reason}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Median time and size of three configz requests.
async fn configz_cost(addr: SocketAddr) -> anyhow::Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..3 {
        let start = Instant::now();
        bytes = configz(addr).await?.len();
        times.push(ms(start.elapsed()));
    }
    Ok((percentile(&times, 0.5), bytes))
}

/// The first configz body showing an edit and when the edit became visible.
struct Seen {
    body: Vec<u8>,
    /// Midpoint of the interval in which the edit became visible, from the edit.
    mid: Duration,
    /// Width of that interval.
    width: Duration,
    /// Found by the periodic configz request, not after the counter moved.
    by_fallback: bool,
}

/// istiod's [`CONFIG_UPDATES`] counter.
async fn config_updates(monitoring: SocketAddr) -> anyhow::Result<f64> {
    let r = http::get(monitoring, "/metrics", CONFIGZ_TIMEOUT).await?;
    if r.status != 200 {
        bail!("istiod /metrics answered {}", r.status);
    }
    crate::metric_sum(&r.text(), CONFIG_UPDATES)
        .with_context(|| format!("no {CONFIG_UPDATES} in istiod's /metrics"))
}

/// Waits from `t0` (just before the edit, when the counter stood at `counted`) until configz
/// shows `needle` (see the module docs).
async fn wait_visible(
    istiod: &Istiod,
    needle: &str,
    t0: Instant,
    mut counted: f64,
) -> anyhow::Result<Seen> {
    let shows = |body: &[u8]| -> anyhow::Result<bool> {
        // Valid UTF-8 (JSON); `str::contains` is a fast substring search.
        Ok(std::str::from_utf8(body)
            .context("configz is not UTF-8")?
            .contains(needle))
    };
    // The edit is not visible before it was made.
    let (mut metric_low, mut configz_low) = (t0, t0);
    loop {
        let asked = Instant::now();
        let count = config_updates(istiod.monitoring_addr).await?;
        let moved = count > counted;
        if moved || asked - configz_low >= CONFIGZ_FALLBACK {
            let configz_asked = Instant::now();
            let body = configz(istiod.http_addr).await?;
            if shows(&body)? {
                let (low, high) = if moved {
                    (metric_low, asked)
                } else {
                    (configz_low, configz_asked)
                };
                return Ok(Seen {
                    body,
                    mid: (low - t0 + (high - t0)) / 2,
                    width: high - low,
                    by_fallback: !moved,
                });
            }
            configz_low = configz_asked;
            counted = count;
        }
        metric_low = asked;
        if t0.elapsed() > EDIT_TIMEOUT {
            bail!("not in configz after {EDIT_TIMEOUT:?}");
        }
        tokio::time::sleep(METRICS_POLL).await;
    }
}

/// Checks, in a configz body, that VirtualService `vs-<i>` has the new `timeout` on its
/// first route and that no object was lost or added (istiod held `total` at the start).
fn verify(body: &[u8], n: usize, total: usize, i: usize, timeout: &str) -> anyhow::Result<()> {
    let (list, counts) = kind_counts(body)?;
    complete(&counts, n).map_err(|e| anyhow::anyhow!("objects lost: {e}"))?;
    if list.len() != total {
        bail!(
            "configz holds {} objects, {total} before the edits",
            list.len()
        );
    }
    let name = format!("vs-{i}");
    let vs = list
        .iter()
        .find(|o| {
            o.get("kind").and_then(Value::as_str) == Some("VirtualService")
                && o.pointer("/metadata/name").and_then(Value::as_str) == Some(&name)
                && o.pointer("/metadata/namespace").and_then(Value::as_str)
                    == Some(&scale::namespace(i))
        })
        .with_context(|| format!("{name} not in configz"))?;
    let have = vs.pointer("/spec/http/0/timeout").and_then(Value::as_str);
    if have != Some(timeout) {
        bail!("{name} has timeout {have:?}, not {timeout}: another object changed");
    }
    Ok(())
}

/// CPU time (user + system) of process `pid` so far, in ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces): the
    // first is field 3 (state); utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy CPU time of the whole machine (all cores) so far, in ticks, from `/proc/stat`.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let t: Vec<u64> = cpu
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    Some([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| t.get(i)).sum())
}

/// When the processes of one path, and the machine, are at rest (see the module docs).
struct Rest {
    pids: Vec<(&'static str, u32)>,
    /// CPU share of a core each process uses when nothing happens (htnn serve, for example,
    /// may have periodic work); a process is at rest up to this plus [`IDLE_CPU_FRACTION`].
    background: Vec<f64>,
}

/// CPU shares of one core over one [`IDLE_WINDOW`]: per process, and of everything else on
/// the machine (other processes than these and this benchmark).
struct Window {
    processes: Vec<f64>,
    foreign: f64,
}

impl Rest {
    fn new(pids: Vec<(&'static str, u32)>) -> Self {
        let background = vec![0.0; pids.len()];
        Self { pids, background }
    }

    async fn window(&self) -> Window {
        let sample = || {
            let own: Vec<u64> = self
                .pids
                .iter()
                .map(|&(_, p)| cpu_ticks(p).unwrap_or(0))
                .collect();
            let me = cpu_ticks(std::process::id()).unwrap_or(0);
            (own, me, machine_busy_ticks().unwrap_or(0))
        };
        let (own0, me0, all0) = sample();
        tokio::time::sleep(IDLE_WINDOW).await;
        let (own1, me1, all1) = sample();
        let window = IDLE_WINDOW.as_secs_f64() * TICKS_PER_SECOND;
        let processes: Vec<f64> = own1
            .iter()
            .zip(&own0)
            .map(|(a, b)| a.saturating_sub(*b) as f64 / window)
            .collect();
        let ours = processes.iter().sum::<f64>() + me1.saturating_sub(me0) as f64 / window;
        let foreign = (all1.saturating_sub(all0) as f64 / window - ours).max(0.0);
        Window { processes, foreign }
    }

    fn describe(&self, w: &Window) -> String {
        let mut parts: Vec<String> = self
            .pids
            .iter()
            .zip(&w.processes)
            .map(|((name, _), share)| format!("{name} {:.0}%", share * 100.0))
            .collect();
        parts.push(format!("other processes {:.0}%", w.foreign * 100.0));
        format!("{} of a core", parts.join(", "))
    }

    /// After startup: waits for rest with no background allowance, then takes each
    /// process' median CPU share over ten windows as its background. Returns a description.
    async fn calibrate(&mut self) -> String {
        let _ = self.wait().await;
        let mut windows = Vec::new();
        for _ in 0..10 {
            windows.push(self.window().await);
        }
        self.background = (0..self.pids.len())
            .map(|i| {
                let mut shares: Vec<f64> = windows.iter().map(|w| w.processes[i]).collect();
                shares.sort_by(f64::total_cmp);
                shares[shares.len() / 2]
            })
            .collect();
        let parts: Vec<String> = self
            .pids
            .iter()
            .zip(&self.background)
            .map(|((name, _), b)| format!("{name} {:.0}%", b * 100.0))
            .collect();
        format!("at rest: {} of a core", parts.join(", "))
    }

    /// Waits until, over one window, every process used at most its background plus
    /// [`IDLE_CPU_FRACTION`] of a core and other processes at most [`FOREIGN_CPU_LIMIT`]. If
    /// that does not happen within [`SETTLE_TIMEOUT`], describes the last window.
    async fn wait(&self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let w = self.window().await;
            let quiet = w
                .processes
                .iter()
                .zip(&self.background)
                .all(|(used, bg)| *used <= bg + IDLE_CPU_FRACTION);
            if quiet && w.foreign <= FOREIGN_CPU_LIMIT {
                return Ok(());
            }
            if start.elapsed() >= SETTLE_TIMEOUT {
                return Err(self.describe(&w));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_change_distinct_objects_in_range() {
        for (n, edits) in [(1000, 20), (10_000, 20), (20, 20), (1001, 7)] {
            let picked: Vec<usize> = (0..edits).map(|k| edited_vs(k, n, edits)).collect();
            let mut unique = picked.clone();
            unique.dedup();
            assert_eq!(unique.len(), edits);
            assert!(picked.iter().all(|&i| i < n));
        }
    }

    #[test]
    fn rewritten_file_matches_the_generator() {
        let dir = tempfile::tempdir().unwrap();
        let n = 250;
        scale::write_istio(
            dir.path(),
            Shape {
                virtual_services: n,
                htnn: false,
                extras: false,
            },
        )
        .unwrap();
        for file in 0..3 {
            let written =
                std::fs::read_to_string(dir.path().join(scale::file_of("vs", file * PER_FILE)))
                    .unwrap();
            assert_eq!(vs_file(n, file, &BTreeMap::new()), written);
        }
        let edited = vs_file(n, 2, &BTreeMap::from([(210, "11s".to_string())]));
        assert!(edited.contains("timeout: 11s"));
        assert_eq!(edited.matches("timeout: 10s").count(), 49);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.9), 18.0);
        assert_eq!(percentile(&[3.0], 0.9), 3.0);
    }
}
