//! `htnn validate -f DIR`.

use std::process::ExitCode;

use crate::cli::ValidateArgs;
use crate::source::dir::DirSource;

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let view = DirSource::new(&args.dir)
        .reload()
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.dir.display()))?;
    for e in &view.errors {
        println!("error: {e}");
    }
    println!(
        "{} valid object(s), {} error(s)",
        view.objects.len(),
        view.errors.len()
    );
    Ok(if view.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
