//! `htnn validate -f DIR` and `htnn translate -f DIR`: the serve pipeline, once, offline.

use std::process::ExitCode;

use htnn_translators::{Options, render, translate as run_translate};

use crate::cli::{TranslateArgs, ValidateArgs};
use crate::source::dir::{DirSource, DirView};

fn load(dir: &std::path::Path) -> anyhow::Result<DirView> {
    DirSource::new(dir)
        .reload()
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let view = load(&args.dir)?;
    let mut failures = 0;
    for e in &view.errors {
        println!("error: {e}");
        failures += 1;
    }
    let output = run_translate(&view.objects, &Options::default());
    for (id, s) in output.statuses.iter().filter(|(_, s)| !s.is_accepted()) {
        println!("error: {id}: {:?}: {}", s.reason, s.message);
        failures += 1;
    }
    println!("{} object(s), {failures} error(s)", view.objects.len());
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn translate(args: TranslateArgs) -> anyhow::Result<ExitCode> {
    let view = load(&args.dir)?;
    for e in &view.errors {
        eprintln!("error: {e}");
    }
    let output = run_translate(
        &view.objects,
        &Options {
            root_namespace: args.root_namespace,
        },
    );
    print!(
        "{}",
        render::to_yaml(&output, |id, obj| args.all
            || view.objects.get(id) != Some(obj))
    );
    Ok(if view.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
