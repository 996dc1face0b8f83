use std::io::ErrorKind;
use std::process::ExitCode;

use pubsubd::{Config, ConfigError};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => {
            args.remove(0);
            pubsubd::bench::main(args)
        }
        Some(cmd) if pubsubd::cli::COMMANDS.contains(&cmd) => pubsubd::cli::main(args),
        Some("serve") => {
            args.remove(0);
            serve(args)
        }
        _ => serve(args),
    }
}

fn serve(args: Vec<String>) -> ExitCode {
    let config = match Config::from_env_and_args(args) {
        Ok(config) => config,
        Err(ConfigError::Help) => {
            print!("{}", pubsubd::config::HELP);
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Version) => {
            println!("{}", version());
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("pubsubd: {err}");
            return ExitCode::from(2);
        }
    };
    pubsubd::logger::init(config.log_level);
    for warning in Config::environment_warnings(|k| std::env::var(k).ok()) {
        log::warn!("{warning}");
    }
    match pubsubd::run(config) {
        Ok(pubsubd::Stopped::Gracefully) => ExitCode::SUCCESS,
        Ok(pubsubd::Stopped::Forced) => ExitCode::from(130),
        Err(err) => {
            // The error names the address (`cannot listen on …`).
            eprintln!("pubsubd: {err}");
            // Only binding the listener fails this way: a start-up error like a bad setting.
            let bind = matches!(
                err.kind(),
                ErrorKind::AddrInUse | ErrorKind::AddrNotAvailable | ErrorKind::PermissionDenied
            );
            ExitCode::from(if bind { 2 } else { 1 })
        }
    }
}

/// `pubsubd 0.1.0`, and the commit when built from a git checkout.
fn version() -> String {
    let version = concat!("pubsubd ", env!("CARGO_PKG_VERSION"));
    match option_env!("PUBSUBD_COMMIT") {
        Some(commit) => format!("{version} ({commit})"),
        None => version.to_string(),
    }
}
