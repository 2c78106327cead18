use std::process::ExitCode;

use clap::Parser;
use flowgate_cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match flowgate_cli::serve::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flowgate serve: {e}");
                ExitCode::from(1)
            }
        },
        Command::HashKey { principal } => {
            let mut input = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
                eprintln!("flowgate hash-key: cannot read standard input: {e}");
                return ExitCode::from(1);
            }
            match flowgate_cli::hash_key_entry(&input, principal.as_deref()) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("flowgate hash-key: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Mcp => flowgate_cli::mcp::main(&cli.api),
        Command::Api(command) => flowgate_cli::commands::main(&cli.api, command),
        Command::Approvals(command) => flowgate_cli::approvals::main(&cli.api, command),
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
        Command::SimulateAgent {
            addr,
            api_key,
            run_duration,
        } => match flowgate_cli::simulate_agent(addr, api_key, run_duration) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flowgate: {e}");
                ExitCode::from(1)
            }
        },
    }
}
