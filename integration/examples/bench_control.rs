//! `make bench-control`: the control plane at scale (not part of `make test`).
//!
//! For generated inputs of 1k, 3k, 10k and 30k VirtualServices (see
//! `htnn_integration::scale`: two named routes each behind one Gateway, two FilterPolicies
//! per VirtualService, one Consumer per two, one DestinationRule and one ServiceEntry per
//! VirtualService), in one process on one thread, release build:
//!
//! - full load (read + parse every file), full translate, full encode (MCP resources of every
//!   served type), each the best of 3 runs;
//! - peak and settled RSS of a real `htnn serve` process with the input loaded (`/proc`);
//! - the latency of one change, from the change reaching the index to the new snapshot being
//!   ready to push (translate the change, re-encode what it touched, build the snapshot), for
//!   each change kind, median and p99 of 50;
//! - the growth exponent of the full translate + encode time between successive sizes
//!   (log of the time ratio over log of the size ratio; 1 is linear).
//!
//! Wall-clock times on a shared 2-core machine are noisy; the exponents and ratios are what to
//! compare. `BENCH_SIZES=1000,3000` picks sizes; the propagation comparison with istiod's own
//! file source is `bench_propagation`, which `make bench-control` runs after this.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use htnn_integration::env::Htnn;
use htnn_integration::scale::{self, Shape};
use htnn_integration::{loopback, percentile};
use htnn_mcp_server::publish::Encoder;
use htnn_mcp_server::source::dir::DirSource;
use htnn_translators::model::{Object, ObjectRef};
use htnn_translators::{Change, Options, Translator, parse};

struct Row {
    size: usize,
    objects: usize,
    load: Duration,
    translate: Duration,
    encode: Duration,
    rss_peak_mib: f64,
    rss_mib: f64,
    /// Change kind, median and p99 latency in ms.
    changes: Vec<(&'static str, f64, f64)>,
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let v = f();
        best = best.min(start.elapsed());
        last = Some(v);
    }
    (best, last.expect("at least one run"))
}

fn object(yaml: &str) -> Arc<Object> {
    let doc = parse::parse_file(yaml, false).remove(0);
    Arc::new(doc.unwrap_or_else(|e| panic!("generated document does not parse: {e}")))
}

/// Applies one change and makes the snapshot ready to push, as `htnn serve` does.
fn step(t: &mut Translator, enc: &mut Encoder, change: Change) -> Duration {
    let start = Instant::now();
    t.apply([change]);
    let delta = t.take_delta();
    enc.update(&t.output().objects, &delta.objects);
    let snapshot = Arc::new(enc.snapshot().clone());
    let elapsed = start.elapsed();
    drop(snapshot);
    elapsed
}

fn incremental(t: &mut Translator, enc: &mut Encoder, n: usize) -> Vec<(&'static str, f64, f64)> {
    const RUNS: usize = 50;
    let mut kinds: Vec<(&'static str, Vec<f64>)> = Vec::new();
    let mut measure =
        |name: &'static str, changes: Vec<Change>, t: &mut Translator, enc: &mut Encoder| {
            let times_ms = changes
                .into_iter()
                .map(|c| step(t, enc, c).as_secs_f64() * 1e3)
                .collect();
            kinds.push((name, times_ms));
        };
    // Edits of existing policies' plugin config, spread over the input.
    let edits = (0..RUNS)
        .map(|k| Change::Upsert(object(&scale::vs_policy(k * n / RUNS, 200 + k as u32))))
        .collect();
    measure("policy edited", edits, t, enc);
    let consumers = (0..RUNS)
        .map(|k| Change::Upsert(object(&scale::consumer(n + k))))
        .collect();
    measure("consumer added", consumers, t, enc);
    let added = (0..RUNS)
        .map(|k| Change::Upsert(object(&scale::virtual_service(n + k, "10s"))))
        .collect();
    measure("virtualservice added", added, t, enc);
    let deleted = (0..RUNS)
        .map(|k| {
            let i = k * n / RUNS + 1;
            Change::Delete(ObjectRef {
                group: "networking.istio.io".into(),
                kind: "VirtualService".into(),
                namespace: scale::namespace(i).into(),
                name: format!("vs-{i}").into(),
            })
        })
        .collect();
    measure("virtualservice deleted", deleted, t, enc);
    kinds
        .into_iter()
        .map(|(name, times)| (name, percentile(&times, 0.5), percentile(&times, 0.99)))
        .collect()
}

/// Peak and settled RSS (MiB) of `htnn serve` with `dir` loaded.
fn serve_rss(dir: &Path) -> anyhow::Result<(f64, f64)> {
    let bin = htnn_integration::path_from_env("HTNN_BIN", "target/release/htnn");
    let ports = htnn_integration::free_ports(2)?;
    let (xds, admin) = (loopback(ports[0]), loopback(ports[1]));
    let log = dir.with_extension("serve.log");
    let rt = tokio::runtime::Runtime::new()?;
    let mut htnn = rt.block_on(Htnn::start(
        &bin,
        dir,
        xds,
        admin,
        &log,
        Duration::from_secs(300),
    ))?;
    // Let the allocator settle after the initial load.
    std::thread::sleep(Duration::from_secs(1));
    let process = htnn.process();
    let mib = |kib: Option<u64>| kib.map_or(f64::NAN, |k| k as f64 / 1024.0);
    let rss = (mib(process.peak_rss_kib()), mib(process.rss_kib()));
    process.kill();
    Ok(rss)
}

fn measure(size: usize, root: &Path) -> anyhow::Result<Row> {
    let dir = root.join(format!("vs-{size}"));
    let shape = Shape {
        virtual_services: size,
        htnn: true,
        extras: true,
    };
    scale::write_all(&dir, shape)?;
    let (load, changes) = best_of(3, || {
        let mut src = DirSource::new(&dir);
        src.reload().expect("reads the generated directory").changes
    });
    let objects = changes.len();
    let opts = Options {
        keep_last_valid: true,
        ..Options::default()
    };
    let (translate, mut translator) = best_of(3, || {
        let mut t = Translator::new(opts.clone());
        t.apply(changes.iter().cloned());
        t.take_delta();
        t
    });
    let (encode, mut encoder) = best_of(3, || {
        let mut enc = Encoder::default();
        let out = &translator.output().objects;
        enc.update(out, out.keys());
        enc
    });
    drop(changes);
    let changes = incremental(&mut translator, &mut encoder, size);
    drop((translator, encoder));
    let (rss_peak_mib, rss_mib) = serve_rss(&dir)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(Row {
        size,
        objects,
        load,
        translate,
        encode,
        rss_peak_mib,
        rss_mib,
        changes,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "1000,3000,10000,30000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let root = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for &size in &sizes {
        eprintln!("measuring {size} VirtualServices ...");
        rows.push(measure(size, root.path())?);
    }
    println!("\n## Full load, translate, encode (best of 3, one thread) and htnn serve RSS\n");
    println!(
        "| VirtualServices | objects | load ms | translate ms | encode ms | translate+encode exponent | serve peak RSS MiB | serve RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in rows.iter().enumerate() {
        let exponent = match i.checked_sub(1).map(|j| &rows[j]) {
            Some(prev) => {
                let t = |r: &Row| (r.translate + r.encode).as_secs_f64();
                format!(
                    "{:.2}",
                    (t(r) / t(prev)).ln() / (r.size as f64 / prev.size as f64).ln()
                )
            }
            None => "-".into(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {exponent} | {:.0} | {:.0} |",
            r.size,
            r.objects,
            ms(r.load),
            ms(r.translate),
            ms(r.encode),
            r.rss_peak_mib,
            r.rss_mib
        );
    }
    println!("\n## One change until the snapshot is ready to push (median / p99 of 50, ms)\n");
    let kinds: Vec<&str> = rows[0].changes.iter().map(|c| c.0).collect();
    println!("| VirtualServices | {} |", kinds.join(" | "));
    println!("|---:|{}", "---:|".repeat(kinds.len()));
    for r in &rows {
        let cells: Vec<String> = r
            .changes
            .iter()
            .map(|(_, p50, p99)| format!("{p50:.3} / {p99:.3}"))
            .collect();
        println!("| {} | {} |", r.size, cells.join(" | "));
    }
    Ok(())
}
