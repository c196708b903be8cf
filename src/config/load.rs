//! The command line and the layers: parsing `shoal`'s arguments, reading
//! the TOML file and the environment, and merging them over the defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{Config, Settings, render};

/// What the command line asked for: the settings it gave, and the commands
/// that are not settings (`--config`, `--print-config`, ...).
#[derive(Debug)]
pub struct Cli {
    /// The TOML file to read (`--config`, `SHOAL_CONFIG`).
    pub config: Option<PathBuf>,
    /// `--print-config`: print the merged configuration and exit.
    pub print_config: bool,
    /// `--print-config-docs`: print `docs/configuration.md` and exit.
    pub print_config_docs: bool,
    /// `--list-reactors`: list the reactors and exit.
    pub list_reactors: bool,
    matches: ArgMatches,
    env: fn(&str) -> Option<String>,
}

/// The process environment, as the settings layer reads it.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Cli {
    /// Parses the process's arguments; prints help or the error and exits
    /// when clap says so.
    pub fn parse() -> Self {
        Self::from_matches(command::<Config>().get_matches(), process_env)
    }

    /// Parses `args` (the first is the program name), reading the
    /// environment from the process.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_with_env(args, process_env)
    }

    /// Parses `args` with `env` standing for the environment.
    pub fn try_parse_with_env<I, T>(
        args: I,
        env: fn(&str) -> Option<String>,
    ) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Ok(Self::from_matches(
            command::<Config>().try_get_matches_from(args)?,
            env,
        ))
    }

    fn from_matches(matches: ArgMatches, env: fn(&str) -> Option<String>) -> Self {
        Self {
            config: matches
                .get_one::<String>("config")
                .map(PathBuf::from)
                .or_else(|| {
                    env("SHOAL_CONFIG")
                        .filter(|p| !p.is_empty())
                        .map(PathBuf::from)
                }),
            print_config: matches.get_flag("print-config"),
            print_config_docs: matches.get_flag("print-config-docs"),
            list_reactors: matches.get_flag("list-reactors"),
            matches,
            env,
        }
    }

    /// Builds the configuration: defaults, then the file, then the
    /// environment, then the command line; validated.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let config: Config = merge(self.config.as_deref(), &self.matches, self.env)?;
        config.validate()?;
        Ok(config)
    }
}

/// The whole command line of a settings struct `S`: its settings under their
/// group headings, and the commands that are not settings.
pub fn command<S: Settings>() -> Command {
    Command::new("shoal")
        .version(env!("CARGO_PKG_VERSION"))
        .about("shoal: a fast, strict BitTorrent tracker over HTTP")
        .long_about(
            "shoal: a fast, strict BitTorrent tracker over HTTP.\n\n\
             Clients announce to http://HOST:PORT/announce and scrape http://HOST:PORT/scrape. \
             Peers live in memory; nothing needs installing or initialising.\n\n\
             Settings come from, in increasing precedence: built-in defaults, the --config \
             file (TOML), SHOAL_* environment variables, and the command line. \
             `shoal --print-config > shoal.toml` writes every key with its default and meaning. \
             -h gives one line per option, --help the whole text.",
        )
        .after_help(
            "Examples:\n  \
             shoal                                   listen on 0.0.0.0:6969 and [::]:6969\n  \
             shoal --listen 127.0.0.1:8080           one local listener\n  \
             shoal --print-config > shoal.toml       write a config file to edit\n  \
             shoal --config shoal.toml               run with it\n  \
             shoal --list-reactors                   which socket runtimes can run here\n  \
             shoal --reactor per-core --workers 4    a single-threaded runtime per core\n  \
             shoal --metrics-listen 127.0.0.1:9100   Prometheus /metrics and /stats there only\n  \
             shoal --tls-listen [::]:443 --tls-cert c.pem --tls-key k.pem   HTTPS too\n  \
             SHOAL_INTERVAL=900 shoal                settings from the environment",
        )
        .next_line_help(false)
        .arg(
            Arg::new("config")
                .long("config")
                .short('c')
                .value_name("FILE")
                .help(
                    "Read settings from this TOML file (see --print-config). [env: SHOAL_CONFIG]",
                ),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration as commented TOML and exit."),
        )
        .arg(
            Arg::new("print-config-docs")
                .long("print-config-docs")
                .action(ArgAction::SetTrue)
                .hide(true)
                .help("Print docs/configuration.md (every setting) and exit."),
        )
        .arg(
            Arg::new("list-reactors")
                .long("list-reactors")
                .action(ArgAction::SetTrue)
                .help("List the reactors, whether each can run here, and exit."),
        )
        .args(render::args(&S::default()))
}

/// Merges the layers of a settings struct: its defaults, the TOML file at
/// `file`, what `env` holds, what the command line gave. A bad value is
/// refused naming the key, where it came from and what is allowed.
pub fn merge<S: Settings>(
    file: Option<&Path>,
    matches: &ArgMatches,
    env: fn(&str) -> Option<String>,
) -> anyhow::Result<S> {
    let mut config = match file {
        Some(path) => from_file(path)?,
        None => S::default(),
    };
    for setting in S::SETTINGS {
        let key = setting.key;
        if let Some(given) = matches.get_many::<String>(key) {
            let texts: Vec<&str> = given.map(String::as_str).collect();
            config.set_from_texts(key, &texts).map_err(|why| {
                anyhow::anyhow!(
                    "invalid value {:?} for {key} on the command line (--{}): {why}",
                    texts.join(","),
                    setting.flag()
                )
            })?;
        } else if let Some(text) = env(&setting.variable()).filter(|t| !t.is_empty()) {
            config.set_from_texts(key, &[&text]).map_err(|why| {
                anyhow::anyhow!(
                    "invalid value {text:?} for {key} in the environment ({}): {why}",
                    setting.variable()
                )
            })?;
        }
    }
    Ok(config)
}

/// Reads a TOML file; unknown keys are errors, missing keys take defaults.
pub fn from_file<S: Settings>(path: &Path) -> anyhow::Result<S> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!(
            "invalid config file {} (see `shoal --print-config` for every key)",
            path.display()
        )
    })
}
