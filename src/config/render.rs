//! What an operator reads of the settings, built from their declarations:
//! the clap arguments (with the real default in `--help`), the commented
//! TOML of `--print-config` and the page `docs/configuration.md`.

use clap::{Arg, ArgAction};

use super::declare::{Setting, Settings, Shape};

/// The value of every key of `config`, as TOML (unset optional keys are
/// absent).
fn values<S: Settings>(config: &S) -> toml::Table {
    toml::Table::try_from(config).unwrap_or_default()
}

/// A value as an operator types it: `1800`, `/announce`, `a, b`.
fn plain(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// One clap argument per setting, with its default taken from `defaults`.
pub fn args<S: Settings>(defaults: &S) -> Vec<Arg> {
    let values = values(defaults);
    S::SETTINGS
        .iter()
        .map(|setting| {
            let mut tail = Vec::new();
            match values.get(setting.key) {
                Some(toml::Value::Array(items)) if items.is_empty() => {}
                Some(value) => tail.push(format!("[default: {}]", plain(value))),
                None => {}
            }
            tail.push(format!("[env: {}]", setting.variable()));
            let tail = tail.join(" ");
            let repeat = if setting.shape == Shape::List {
                " Repeatable; the variable takes a comma list."
            } else {
                ""
            };
            let mut arg = Arg::new(setting.key)
                .long(setting.flag())
                .value_name(setting.value_name)
                .help_heading(setting.group)
                .help(format!("{} {tail}", setting.summary()))
                .long_help(format!("{}{repeat}\n{tail}", setting.paragraph()));
            arg = match setting.shape {
                Shape::One | Shape::Optional => arg.action(ArgAction::Set),
                Shape::List => arg.action(ArgAction::Append).value_delimiter(','),
                Shape::Switch => arg
                    .action(ArgAction::Set)
                    .num_args(0..=1)
                    .default_missing_value("true"),
            };
            if let Some(short) = setting.short {
                arg = arg.short(short);
            }
            if let Some(alias) = setting.alias {
                arg = arg.alias(alias);
            }
            if let Some(choices) = setting.choices {
                arg = arg.value_parser(clap::builder::PossibleValuesParser::new(choices.iter()));
            }
            arg
        })
        .collect()
}

/// Comment lines, `# ` before each line of `text`.
fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("# ");
        out.push_str(line.trim());
        out.push('\n');
    }
}

/// The configuration as commented TOML that `--config` reads back to the
/// same value: every key under its group's heading, its doc as a comment,
/// an unset optional key commented out with an example.
pub fn commented_toml<S: Settings>(config: &S) -> String {
    let values = values(config);
    let mut out = String::from(
        "# shoal configuration. Every key is optional; shown are the values in effect.\n\
         # Each key is also a command-line option (--key-name) and an environment\n\
         # variable (SHOAL_KEY_NAME); the command line wins over the environment,\n\
         # which wins over this file.\n",
    );
    let mut group = "";
    for setting in S::SETTINGS {
        if setting.group != group {
            group = setting.group;
            out.push_str(&format!("\n# ==== {group} ====\n"));
        }
        out.push('\n');
        comment(&mut out, setting.doc);
        match (values.get(setting.key), setting.example) {
            (Some(value), _) => {
                let mut one = toml::Table::new();
                one.insert(setting.key.to_owned(), value.clone());
                out.push_str(&toml::to_string(&one).unwrap_or_default());
            }
            (None, Some(example)) => out.push_str(&format!("# {} = {example}\n", setting.key)),
            (None, None) => {}
        }
    }
    out
}

/// A table row: `|` and `<` escaped, so `/<passkey>` is not read as HTML.
fn row(cells: &[String]) -> String {
    let cells: Vec<String> = cells
        .iter()
        .map(|c| c.replace('|', "\\|").replace('<', "&lt;"))
        .collect();
    format!("| {} |\n", cells.join(" | "))
}

/// `docs/configuration.md`: a table per group (key, flag, variable,
/// default, meaning), then the `--print-config` output of the defaults.
pub fn markdown<S: Settings>() -> String {
    let defaults = S::default();
    let values = values(&defaults);
    let mut out = String::from(
        "# Configuration\n\n\
         Every setting of shoal, grouped as in `shoal --help`. Each is a key of the TOML file\n\
         `--config` reads, a command-line option and an environment variable; the command\n\
         line wins over the environment, which wins over the file, which wins over the\n\
         defaults. Repeatable options take a comma-separated list in the environment.\n\n\
         This page is generated from the settings' declarations in `src/config.rs`\n\
         (`shoal --print-config-docs`); a test (`configuration_doc_is_generated` in\n\
         `tests/cli.rs`) fails when it is stale. Regenerate it with:\n\n    \
         cargo run -q -- --print-config-docs > docs/configuration.md\n",
    );
    let mut group = "";
    for setting in S::SETTINGS {
        if setting.group != group {
            group = setting.group;
            out.push_str(&format!("\n## {group}\n\n"));
            out.push_str("| key | option / variable | default | meaning |\n");
            out.push_str("|---|---|---|---|\n");
        }
        out.push_str(&row(&[
            format!("`{}`", setting.key),
            format!("`--{}`, `{}`", setting.flag(), setting.variable()),
            default_cell(setting, values.get(setting.key)),
            setting.paragraph(),
        ]));
    }
    out.push_str(
        "\n## As a file\n\n\
         `shoal --print-config` with no other settings prints this; edit it and pass it\n\
         with `--config`.\n\n```toml\n",
    );
    out.push_str(&commented_toml(&defaults));
    out.push_str("```\n");
    out
}

fn default_cell(setting: &Setting, value: Option<&toml::Value>) -> String {
    match value {
        Some(toml::Value::Array(items)) if items.is_empty() => "none".to_owned(),
        Some(value) => format!("`{}`", plain(value)),
        None if setting.shape == Shape::Optional => "unset".to_owned(),
        None => String::new(),
    }
}
