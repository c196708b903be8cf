//! The `settings!` macro: one declaration per setting, and everything an
//! operator sees of it derived from that one place.
//!
//! A declarative macro rather than a layering library: a setting is a field
//! with a type, a default and a doc comment, and the macro turns that list
//! into the `Config` struct (serde: the TOML keys), its `Default`, and a
//! table of [`Setting`]s from which the command line (flags with the real
//! default in `--help`), the `SHOAL_*` variables, `--print-config` and the
//! docs page are built at run time. Layering is twenty lines of
//! `config::load`; a library would add a dependency and a second vocabulary
//! without removing any of the declarations.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How a setting's type is given on the command line and in the
/// environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One value; the last one given wins.
    One,
    /// One value, or unset (no default value).
    Optional,
    /// Repeatable flag; the environment takes a comma-separated list.
    List,
    /// `--flag` alone means true; `--flag=false` is allowed.
    Switch,
}

/// One setting as the operator sees it, made by `settings!`.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The TOML key; the flag and the variable are derived from it.
    pub key: &'static str,
    /// The heading it is listed under.
    pub group: &'static str,
    /// The doc comment of its field, one line per line.
    pub doc: &'static str,
    /// Placeholder for the value in `--help` (`SECS`, `ADDR`, ...).
    pub value_name: &'static str,
    pub shape: Shape,
    /// A one-letter flag.
    pub short: Option<char>,
    /// A second flag name, kept for compatibility.
    pub alias: Option<&'static str>,
    /// For an unset optional key: a valid value, printed commented out.
    pub example: Option<&'static str>,
    /// The only values allowed, listed in `--help`.
    pub choices: Option<&'static [&'static str]>,
}

impl Setting {
    /// The flag's name without dashes: the key with `-` for `_`.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// The environment variable: `SHOAL_` and the key in capitals.
    pub fn variable(&self) -> String {
        format!("SHOAL_{}", self.key.to_ascii_uppercase())
    }

    /// The doc as one paragraph.
    pub fn paragraph(&self) -> String {
        self.doc
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The doc's first sentence, for `-h`: up to the first full stop
    /// followed by a capital (so "e.g. an" does not end it).
    pub fn summary(&self) -> String {
        let text = self.paragraph();
        let end = text.match_indices(". ").find(|(at, _)| {
            text[at + 2..]
                .chars()
                .next()
                .is_some_and(char::is_uppercase)
        });
        match end {
            Some((at, _)) => text[..=at].to_owned(),
            None => text,
        }
    }
}

/// A struct made by `settings!`: its setting table and a typed setter for
/// values given as text (command line, environment).
pub trait Settings:
    Default + serde::Serialize + serde::de::DeserializeOwned + Clone + std::fmt::Debug
{
    /// Every setting, in the order declared (grouped).
    const SETTINGS: &'static [Setting];

    /// Sets `key` from the texts one source gave for it.
    fn set_from_texts(&mut self, key: &str, texts: &[&str]) -> Result<(), String>;
}

/// A type a setting can have: how its texts are parsed.
pub trait Value: Sized {
    const SHAPE: Shape;
    fn from_texts(texts: &[&str]) -> Result<Self, String>;
}

/// A single value parsed from text, with an error that says what is
/// allowed.
pub trait Scalar: Sized {
    fn parse(text: &str) -> Result<Self, String>;
}

macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn parse(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|_| {
                    format!("expected a whole number from 0 to {}", <$t>::MAX)
                })
            }
        }
    )*};
}
whole_numbers!(u16, u32, u64, usize);

impl Scalar for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl Scalar for PathBuf {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(PathBuf::from(text))
    }
}

impl Scalar for SocketAddr {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| "expected an address such as 0.0.0.0:6969 or [::]:6969".to_owned())
    }
}

impl Scalar for crate::access::Mode {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim().parse()
    }
}

/// Every scalar is a setting of one value.
macro_rules! one_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            const SHAPE: Shape = Shape::One;
            fn from_texts(texts: &[&str]) -> Result<Self, String> {
                Scalar::parse(texts.last().copied().unwrap_or_default())
            }
        }
    )*};
}
one_value!(
    u16,
    u32,
    u64,
    usize,
    String,
    PathBuf,
    SocketAddr,
    crate::access::Mode
);

impl Value for bool {
    const SHAPE: Shape = Shape::Switch;
    fn from_texts(texts: &[&str]) -> Result<Self, String> {
        match texts
            .last()
            .map(|t| t.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            _ => Err("expected true or false".to_owned()),
        }
    }
}

impl<T: Scalar> Value for Option<T> {
    const SHAPE: Shape = Shape::Optional;
    fn from_texts(texts: &[&str]) -> Result<Self, String> {
        T::parse(texts.last().copied().unwrap_or_default()).map(Some)
    }
}

impl<T: Scalar> Value for Vec<T> {
    const SHAPE: Shape = Shape::List;
    fn from_texts(texts: &[&str]) -> Result<Self, String> {
        texts
            .iter()
            .flat_map(|text| text.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| T::parse(item).map_err(|why| format!("{item:?}: {why}")))
            .collect()
    }
}

/// Declares a configuration struct, one setting at a time:
///
/// ```text
/// settings! {
///     pub struct Config;
///     group "Listeners" {
///         /// Addresses to accept HTTP on.
///         listen: Vec<SocketAddr> = vec![...], "ADDR" [short = Some('l')];
///     }
/// }
/// ```
///
/// Each entry: doc comment, key, type, default, the value's placeholder in
/// `--help`, and optionally `[short = Some(..), alias = Some(..),
/// example = Some(..), choices = Some(&[..])]`.
#[macro_export]
macro_rules! settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident;
        $(
            group $group:literal {
                $(
                    $(#[doc = $doc:literal])*
                    $key:ident : $ty:ty = $default:expr, $value_name:literal
                        $([ $($extra:ident = $extra_value:expr),* $(,)? ])?;
                )*
            }
        )*
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        $vis struct $name {
            $($(
                $(#[doc = $doc])*
                pub $key: $ty,
            )*)*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($($key: $default,)*)* }
            }
        }

        impl $crate::config::declare::Settings for $name {
            const SETTINGS: &'static [$crate::config::declare::Setting] = &[
                $($(
                    $crate::config::declare::Setting {
                        $($($extra: $extra_value,)*)?
                        ..$crate::config::declare::Setting {
                            key: stringify!($key),
                            group: $group,
                            doc: concat!($($doc, "\n"),*),
                            value_name: $value_name,
                            shape: <$ty as $crate::config::declare::Value>::SHAPE,
                            short: None,
                            alias: None,
                            example: None,
                            choices: None,
                        }
                    },
                )*)*
            ];

            fn set_from_texts(&mut self, key: &str, texts: &[&str]) -> Result<(), String> {
                match key {
                    $($(
                        stringify!($key) => {
                            self.$key = <$ty as $crate::config::declare::Value>::from_texts(texts)?;
                        }
                    )*)*
                    other => return Err(format!("no setting is called {other}")),
                }
                Ok(())
            }
        }
    };
}
