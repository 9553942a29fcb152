//! `htnn validate -f DIR` and `htnn translate -f DIR`: the serve pipeline, once, offline.

use std::process::ExitCode;

use htnn_translators::{Options, Output, Translator, render};

use crate::cli::{TranslateArgs, ValidateArgs};
use crate::source::LoadError;
use crate::source::dir::DirSource;

struct View {
    source: DirSource,
    errors: Vec<LoadError>,
    output: Output,
}

fn load(dir: &std::path::Path, opts: Options) -> anyhow::Result<View> {
    let mut source = DirSource::new(dir);
    let reload = source
        .reload()
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
    let mut translator = Translator::new(opts);
    translator.apply(reload.changes);
    Ok(View {
        source,
        errors: reload.errors,
        output: translator.into_output(),
    })
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let view = load(&args.dir, Options::default())?;
    let mut failures = 0;
    for e in &view.errors {
        println!("error: {e}");
        failures += 1;
    }
    for (id, s) in view
        .output
        .statuses
        .iter()
        .filter(|(_, s)| !s.is_accepted())
    {
        println!("error: {id}: {:?}: {}", s.reason, s.message);
        failures += 1;
    }
    println!(
        "{} object(s), {failures} error(s)",
        view.source.objects().len()
    );
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn translate(args: TranslateArgs) -> anyhow::Result<ExitCode> {
    let opts = Options {
        root_namespace: args.root_namespace,
        ..Options::default()
    };
    let view = load(&args.dir, opts)?;
    for e in &view.errors {
        eprintln!("error: {e}");
    }
    let input = view.source.objects();
    print!(
        "{}",
        render::to_yaml(&view.output, |id, obj| args.all
            || input.get(id).map(|o| &**o) != Some(obj))
    );
    Ok(if view.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
