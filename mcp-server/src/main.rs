use clap::Parser;

use htnn_mcp_server::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => htnn_mcp_server::serve::run(*args),
        Command::Validate(args) => htnn_mcp_server::validate::run(args),
        Command::Translate(args) => htnn_mcp_server::validate::translate(args),
        Command::Crds => htnn_mcp_server::k8s::crds::print(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("htnn: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
