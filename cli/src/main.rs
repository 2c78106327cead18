use std::process::ExitCode;

use clap::Parser;
use flowgate_cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files, json } => {
            match flowgate_cli::validate(&files, json, &mut std::io::stdout()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("flowgate: cannot write the report: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
