//! The `shoal` binary: parse the command line, set up logging, run.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use shoal::config::{Cli, Config};

use shoal::shutdown::{self, Reload, Shutdown};

/// mimalloc: a connection's short-lived allocations (the task, tokio's
/// cache-aligned socket registration) are aligned and many; glibc's
/// `memalign` path was ~5% of CPU with a connection per request. Built
/// without transparent huge pages (`no_thp`): with them resident memory
/// grows in 2 MiB steps and kept 10-25% more per peer at 1M peers, for no
/// measured gain in throughput (docs/benchmarks.md, Memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_generic_collect` (mimalloc v3's option 34): a thread collects
/// its heap every this many allocations that miss its free lists.
const MI_OPTION_GENERIC_COLLECT: i32 = 34;

/// Keeps mimalloc's resident memory close to what the store holds.
///
/// A swarm's block is often grown by one worker and was allocated by the
/// other, so its old block is freed across threads; the owner takes such
/// frees back (and can return a page once it is empty) only when it
/// collects its heap, by default every 10,000 slow-path allocations, which a
/// steadily growing store may not reach for a long time. Collecting every
/// 1,000 cut the resident memory of 1M peers by up to a fifth, with no
/// measured cost (docs/benchmarks.md, Memory); MIMALLOC_GENERIC_COLLECT still
/// overrides it. And pages given back are returned to the OS only when some
/// thread calls into mimalloc after a short delay, so a small thread runs
/// those delayed purges once a second (it touches no tracker state).
///
/// A worker that goes idle after a burst of growth does no more slow-path
/// allocations, so it also collects its heap as the reactor's worker upkeep:
/// at 1M peers over 100k torrents with two workers, the pages they still
/// held were 2.5 bytes a peer (docs/benchmarks.md, Memory).
fn start_allocator_upkeep() {
    // SAFETY: sets an option's default before any thread but this one runs;
    // an unknown option number would only be ignored.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_GENERIC_COLLECT, 1000) };
    // SAFETY: as below; called on each worker thread for its own heap.
    shoal::reactor::set_worker_upkeep(|| unsafe { libmimalloc_sys::mi_collect(false) });
    let upkeep = || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: mi_collect has no preconditions; it only frees and
            // purges memory no allocation refers to.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    };
    // Without the thread memory is only returned later: not worth failing.
    let _ = std::thread::Builder::new()
        .name("alloc-upkeep".into())
        .spawn(upkeep);
}

fn main() -> std::process::ExitCode {
    start_allocator_upkeep();
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
