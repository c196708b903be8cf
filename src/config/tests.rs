use std::path::PathBuf;

use super::*;

/// An environment with nothing in it.
fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn printed_config_reads_back_to_the_same_value() {
    let defaults = Config::default();
    let printed = defaults.to_commented_toml();
    let parsed: Config = toml::from_str(&printed).unwrap();
    assert_eq!(parsed, defaults);

    let custom = Config {
        peer_ttl: Some(60),
        tracker_id: Some("t".into()),
        workers: Some(3),
        interval: 100,
        ..Config::default()
    };
    let parsed: Config = toml::from_str(&custom.to_commented_toml()).unwrap();
    assert_eq!(parsed, custom);
}

#[test]
fn every_key_is_declared_once_with_a_doc_and_valid_example() {
    let full = Config {
        peer_ttl: Some(1),
        tracker_id: Some("x".into()),
        workers: Some(1),
        state_file: Some("/tmp/state.bin".into()),
        access_list: Some("/tmp/list.txt".into()),
        passkeys: Some("/tmp/keys.txt".into()),
        root_redirect: Some("https://x/".into()),
        tls_cert: Some("/tmp/cert.pem".into()),
        tls_key: Some("/tmp/key.pem".into()),
        redis_password_file: Some("/tmp/redis-password".into()),
        redis_tls_ca_file: Some("/tmp/ca.pem".into()),
        redis_tls_cert_file: Some("/tmp/client.pem".into()),
        redis_tls_key_file: Some("/tmp/client.key".into()),
        ..Config::default()
    };
    let table = toml::Table::try_from(&full).unwrap();
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut declared: Vec<&str> = Config::SETTINGS.iter().map(|s| s.key).collect();
    keys.sort_unstable();
    declared.sort_unstable();
    assert_eq!(keys, declared);
    for setting in Config::SETTINGS {
        assert!(!setting.doc.trim().is_empty(), "{} has no doc", setting.key);
        // Every commented-out example is itself valid for its key.
        if let Some(example) = setting.example {
            let one: Config = toml::from_str(&format!("{} = {example}", setting.key)).unwrap();
            assert_ne!(one, Config::default(), "{}", setting.key);
        }
    }
    // Grouped as an operator thinks, each group in one run.
    let mut groups: Vec<&str> = Config::SETTINGS.iter().map(|s| s.group).collect();
    groups.dedup();
    assert_eq!(
        groups,
        [
            "Listeners",
            "Protocol",
            "Limits",
            "Security",
            "Store",
            "Persistence",
            "Operations"
        ]
    );
}

#[test]
fn command_line_overrides_the_file() {
    let dir = std::env::temp_dir().join(format!("shoal-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("shoal.toml");
    std::fs::write(&file, "interval = 600\nmax_numwant = 80\n").unwrap();
    let cli = Cli::try_parse_from([
        "shoal",
        "--config",
        file.to_str().unwrap(),
        "--interval",
        "700",
    ])
    .unwrap();
    let config = cli.into_config().unwrap();
    assert_eq!((config.interval, config.max_numwant), (700, 80));
    std::fs::write(&file, "intervall = 600\n").unwrap();
    let cli = Cli::try_parse_from(["shoal", "--config", file.to_str().unwrap()]).unwrap();
    let error = format!("{:#}", cli.into_config().unwrap_err());
    assert!(error.contains("unknown field `intervall`"), "{error}");
}

#[test]
fn the_environment_sits_between_the_file_and_the_command_line() {
    fn env(name: &str) -> Option<String> {
        match name {
            "SHOAL_INTERVAL" => Some("300".into()),
            "SHOAL_MAX_NUMWANT" => Some("9".into()),
            "SHOAL_LISTEN" => Some("127.0.0.1:1, [::1]:2".into()),
            "SHOAL_TRUSTED_PROXIES" => Some("10.0.0.0/8".into()),
            "SHOAL_FULL_SCRAPE" => Some("true".into()),
            _ => None,
        }
    }
    let cli = Cli::try_parse_with_env(["shoal", "--max-numwant", "2"], env).unwrap();
    let config = cli.into_config().unwrap();
    assert_eq!((config.interval, config.max_numwant), (300, 2));
    assert_eq!(
        config.listen,
        ["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()]
    );
    assert_eq!(config.trusted_proxies, ["10.0.0.0/8"]);
    assert!(config.full_scrape);
    // Repeatable on the command line, under the old name too; a switch alone
    // means true.
    let cli = Cli::try_parse_with_env(
        [
            "shoal",
            "--trusted-proxy",
            "10.0.0.0/8",
            "--trusted-proxies",
            "192.168.0.0/16,fd00::/8",
            "--allow-ip-param",
            "--ignore-bad-state=false",
        ],
        no_env,
    )
    .unwrap();
    let config = cli.into_config().unwrap();
    assert_eq!(
        config.trusted_proxies,
        ["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"]
    );
    assert!(config.allow_ip_param && !config.ignore_bad_state);
}

#[test]
fn a_bad_value_names_the_key_the_source_and_what_is_allowed() {
    fn env(name: &str) -> Option<String> {
        (name == "SHOAL_MAX_TORRENTS").then(|| "many".into())
    }
    let error = Cli::try_parse_with_env(["shoal"], env)
        .unwrap()
        .into_config()
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "invalid value \"many\" for max_torrents in the environment (SHOAL_MAX_TORRENTS): \
         expected a whole number from 0 to 18446744073709551615"
    );
    let error = Cli::try_parse_with_env(["shoal", "--listen", "localhost"], no_env)
        .unwrap()
        .into_config()
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "invalid value \"localhost\" for listen on the command line (--listen): \"localhost\": \
         expected an address such as 0.0.0.0:6969 or [::]:6969"
    );
    let error = Cli::try_parse_with_env(["shoal", "--access-mode", "open"], no_env).unwrap_err();
    assert!(
        error.to_string().contains("[possible values: allow, deny]"),
        "{error}"
    );
}

#[test]
fn invalid_settings_are_refused_with_the_reason() {
    let config = Config {
        listen: vec![],
        ..Config::default()
    };
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("listen"), "{error}");
    let config = Config {
        workers: Some(0),
        ..Config::default()
    };
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("workers"), "{error}");
    let config = Config {
        udp_coalesce_us: 1001,
        ..Config::default()
    };
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("udp_coalesce_us"), "{error}");
    let config = Config {
        udp_coalesce_us: 1000,
        ..Config::default()
    };
    config.validate().unwrap();
    let config = Config {
        min_interval: 10,
        interval: 5,
        ..Config::default()
    };
    assert_eq!(config.effective_min_interval(), 5);
    assert_eq!(Config::default().effective_peer_ttl(), 2700);
}

crate::settings! {
    /// A settings struct declared only here, to show what one declaration
    /// gives.
    struct Probe;

    group "Protocol" {
        /// Seconds between announces.
        interval: u32 = 1800, "SECS";
    }

    group "Operations" {
        /// How hard the frobnicator works. Higher is louder.
        frobnicate_level: u32 = 7, "LEVEL";
        /// Where the frobnicator keeps its notes.
        frobnicate_notes: Option<PathBuf> = None, "FILE" [example = Some("\"/tmp/notes\"")];
    }
}

#[test]
fn one_declaration_gives_all_six_places() {
    // 1. The TOML key.
    let from_toml: Probe = toml::from_str("frobnicate_level = 9").unwrap();
    assert_eq!(from_toml.frobnicate_level, 9);
    assert!(toml::from_str::<Probe>("frobnicate_levle = 9").is_err());

    // 2. The flag and 3. the variable, in their order of precedence.
    fn env(name: &str) -> Option<String> {
        (name == "SHOAL_FROBNICATE_LEVEL").then(|| "12".into())
    }
    let parse = |args: &[&str], env: fn(&str) -> Option<String>| -> Probe {
        let matches = command::<Probe>().try_get_matches_from(args).unwrap();
        merge(None, &matches, env).unwrap()
    };
    assert_eq!(parse(&["shoal"], no_env).frobnicate_level, 7);
    assert_eq!(parse(&["shoal"], env).frobnicate_level, 12);
    let both = parse(&["shoal", "--frobnicate-level", "11"], env);
    assert_eq!(both.frobnicate_level, 11);
    let notes = parse(&["shoal", "--frobnicate-notes", "/n"], no_env);
    assert_eq!(notes.frobnicate_notes, Some(PathBuf::from("/n")));

    // 4. --print-config: the doc as a comment over the value in effect, under
    // its group; an unset key commented out with its example.
    let printed = render::commented_toml(&both);
    assert!(
        printed.contains(
            "# ==== Operations ====\n\n# How hard the frobnicator works. Higher is louder.\n\
             frobnicate_level = 11\n"
        ),
        "{printed}"
    );
    assert!(
        printed.contains("# frobnicate_notes = \"/tmp/notes\"\n"),
        "{printed}"
    );
    assert_eq!(toml::from_str::<Probe>(&printed).unwrap(), both);

    // 5. --help: the line with the real default and the variable, under the
    // group's heading; -h the first sentence only.
    let help = command::<Probe>().render_long_help().to_string();
    let operations = help.split("Operations:").nth(1).expect("a heading");
    assert!(operations.contains("--frobnicate-level <LEVEL>"), "{help}");
    assert!(
        operations.contains("How hard the frobnicator works. Higher is louder.\n"),
        "{help}"
    );
    assert!(
        operations.contains("[default: 7] [env: SHOAL_FROBNICATE_LEVEL]"),
        "{help}"
    );
    let short = command::<Probe>().render_help().to_string();
    assert!(
        short.contains("How hard the frobnicator works. [default: 7]"),
        "{short}"
    );
    assert!(!short.contains("Higher is louder"), "{short}");

    // 6. The docs page's row.
    let page = render::markdown::<Probe>();
    assert!(
        page.contains(
            "| `frobnicate_level` | `--frobnicate-level`, `SHOAL_FROBNICATE_LEVEL` | `7` | \
             How hard the frobnicator works. Higher is louder. |\n"
        ),
        "{page}"
    );
    assert!(
        page.contains(
            "| `frobnicate_notes` | `--frobnicate-notes`, `SHOAL_FROBNICATE_NOTES` | unset |"
        ),
        "{page}"
    );
}
