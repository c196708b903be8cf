//! The `shoal` binary: parse the command line, set up logging, run.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use shoal::config::{Cli, Config};

use shoal::shutdown::{self, Reload, Shutdown};

/// mimalloc: a connection's short-lived allocations (the task, tokio's
/// cache-aligned socket registration) are aligned and many; glibc's
/// `memalign` path was ~5% of CPU with a connection per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match try_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoal: error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.list_reactors {
        print!("{}", shoal::reactor::list());
        return Ok(());
    }
    if cli.print_config_docs {
        print!("{}", shoal::config::render::markdown::<Config>());
        return Ok(());
    }
    let print_config = cli.print_config;
    let config: Config = cli.into_config()?;
    if print_config {
        print!("{}", config.to_commented_toml());
        return Ok(());
    }
    let filter = EnvFilter::try_new(&config.log_level)
        .map_err(|error| anyhow::anyhow!("invalid log level {:?}: {error}", config.log_level))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let shutdown = Shutdown::new();
    let reload = Reload::new();
    shutdown::on_signals(shutdown.clone(), reload.clone())?;
    shoal::run(config, shutdown, reload)
}
