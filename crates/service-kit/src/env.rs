//! Environment variables read under one set of rules, the same in the three binaries:
//!
//! - an empty variable counts as unset (its default applies);
//! - a variable that is not valid UTF-8 is an error naming it, never silently unset;
//! - booleans are `true`/`false`, `1`/`0`, `yes`/`no` or `on`/`off`, in any case;
//! - numbers, ports and durations are checked against their range, and the error names the
//!   variable and the range;
//! - surrounding spaces around numbers, booleans and enums are ignored.
//!
//! [`Vars`] reads through a lookup (the process's environment, or a map in tests); the `parse_*`
//! functions apply the same rules to a value that came from elsewhere (a flag, a properties
//! file), under the name to blame.

use std::env::VarError;
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

/// A setting that cannot be used; the message names the variable (or key) and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} is invalid: {reason}")]
pub struct ConfigError {
    /// The environment variable, flag or properties key the value came from.
    pub variable: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            reason: reason.into(),
        }
    }
}

/// A client certificate and its key, which come as a pair: both (`Some`), neither (`None`), or
/// an error in `variable` naming the two parameters.
pub fn both_or_neither<T>(
    variable: &str,
    (first_name, first): (&str, Option<T>),
    (second_name, second): (&str, Option<T>),
) -> Result<Option<(T, T)>, ConfigError> {
    match (first, second) {
        (Some(first), Some(second)) => Ok(Some((first, second))),
        (None, None) => Ok(None),
        _ => Err(ConfigError::new(
            variable,
            format!("{first_name} and {second_name} go together: give both or neither"),
        )),
    }
}

/// How a variable is looked up: `std::env::var`'s signature, so a test can pass a map.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

fn process_var(name: &str) -> Result<String, VarError> {
    std::env::var(name)
}

/// Reads variables under the module's rules.
#[derive(Clone, Copy)]
pub struct Vars<'a> {
    lookup: Lookup<'a>,
}

impl fmt::Debug for Vars<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vars").finish_non_exhaustive()
    }
}

impl Vars<'static> {
    /// The process's environment.
    pub fn process() -> Self {
        Self {
            lookup: &process_var,
        }
    }
}

impl<'a> Vars<'a> {
    pub fn new(lookup: Lookup<'a>) -> Self {
        Self { lookup }
    }

    /// The value, `None` when unset or empty; an error when it is not UTF-8.
    pub fn get(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match (self.lookup)(name) {
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(VarError::NotPresent) => Ok(None),
            Err(VarError::NotUnicode(_)) => Err(not_unicode(name)),
        }
    }

    /// The value, or `default` when unset.
    pub fn string_or(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.get(name)?.unwrap_or_else(|| default.to_owned()))
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        self.get(name)?
            .map_or(Ok(default), |text| parse_bool(name, &text))
    }

    /// Any [`FromStr`] value (an enum, an address): the parser's message is the reason.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(name)? {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|error| ConfigError::new(name, format!("{text:?}: {error}"))),
        }
    }

    /// A whole number within `range`.
    pub fn number_in<T>(
        &self,
        name: &str,
        default: T,
        range: RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        self.get(name)?
            .map_or(Ok(default), |text| parse_in(name, &text, range))
    }

    /// A port to listen on: 0 picks a free one.
    pub fn listen_port_or(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        self.number_in(name, default, 0..=u16::MAX)
    }

    /// A port to connect to: 1 to 65535.
    pub fn port_or(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        self.number_in(name, default, 1..=u16::MAX)
    }

    /// Milliseconds within `range`.
    pub fn millis_in(
        &self,
        name: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number_in(name, default, range)
            .map(Duration::from_millis)
    }
}

/// Reads `T` through a lookup that answers `Option` (a map in tests): `None` is unset.
pub fn from_lookup<T>(
    lookup: impl Fn(&str) -> Option<String>,
    read: impl FnOnce(&Vars<'_>) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    let lookup = |name: &str| lookup(name).ok_or(VarError::NotPresent);
    read(&Vars::new(&lookup))
}

/// Every variable `read` looks up, in the order it first does, read from an empty environment
/// (where every default applies, so no branch stops early): a binary's list of the variables it
/// reads, derived from the code that reads them instead of kept by hand beside it. The names
/// are leaked once: call it from a `LazyLock`.
pub fn names_read<T>(read: impl FnOnce(&Vars<'_>) -> Result<T, ConfigError>) -> Vec<&'static str> {
    let names = std::cell::RefCell::new(Vec::<String>::new());
    let lookup = |name: &str| {
        let mut names = names.borrow_mut();
        if !names.iter().any(|seen| seen == name) {
            names.push(name.to_owned());
        }
        Err(VarError::NotPresent)
    };
    // Only the names matter; an error would mean a default is invalid, which the binaries'
    // own tests catch.
    let _ = read(&Vars::new(&lookup));
    names
        .into_inner()
        .into_iter()
        .map(|name| &*Box::leak(name.into_boxed_str()))
        .collect()
}

fn not_unicode(name: &str) -> ConfigError {
    ConfigError::new(name, "is not valid UTF-8")
}

/// Fails naming the first of `names` whose value is not valid UTF-8 (for readers, like clap,
/// that would otherwise report it without the variable's name).
pub fn check_unicode<'n>(
    vars: &Vars<'_>,
    names: impl IntoIterator<Item = &'n str>,
) -> Result<(), ConfigError> {
    for name in names {
        vars.get(name)?;
    }
    Ok(())
}

/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, in any case.
pub fn parse_bool(name: &str, text: &str) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            name,
            format!("{text:?} is not a boolean: expected true/false, 1/0, yes/no or on/off"),
        )),
    }
}

/// A whole number within `range`; the message names the range.
pub fn parse_in<T>(name: &str, text: &str, range: RangeInclusive<T>) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    let out_of_range = || {
        ConfigError::new(
            name,
            format!(
                "{text:?} is out of range: expected a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )
    };
    let value: T = match text.trim().parse() {
        Ok(value) => value,
        // A number too large (or negative) for the type is out of range, not "not a number".
        Err(_) if is_integer(text.trim()) => return Err(out_of_range()),
        Err(_) => {
            return Err(ConfigError::new(
                name,
                format!(
                    "{text:?} is not a whole number (expected {} to {})",
                    range.start(),
                    range.end()
                ),
            ));
        }
    };
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(out_of_range())
    }
}

fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A port to connect to: 1 to 65535.
pub fn parse_port(name: &str, text: &str) -> Result<u16, ConfigError> {
    parse_in(name, text, 1..=u16::MAX)
}

/// Runs `read` over an environment holding exactly `pairs` (the kit's tests).
#[cfg(test)]
pub(crate) fn with<R>(pairs: &[(&str, &str)], read: impl FnOnce(Vars<'_>) -> R) -> R {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let lookup = move |name: &str| map.get(name).cloned().ok_or(VarError::NotPresent);
    read(Vars::new(&lookup))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::ffi::OsString;

    use super::*;

    #[test]
    fn names_read_lists_each_lookup_once_in_order() {
        let names = names_read(|vars| {
            let port = vars.port_or("PORT", 80)?;
            vars.get("HOST")?;
            vars.port_or("PORT", port)
        });
        assert_eq!(names, ["PORT", "HOST"]);
        // A reader that stops early still lists what it read up to there.
        let names = names_read(|vars| {
            vars.get("FIRST")?;
            Err::<(), _>(ConfigError::new("FIRST", "bad default"))
        });
        assert_eq!(names, ["FIRST"]);
    }

    #[test]
    fn empty_counts_as_unset() {
        with(&[("A", ""), ("B", "  ")], |vars| {
            assert_eq!(vars.get("A").unwrap(), None);
            assert_eq!(vars.string_or("A", "dflt").unwrap(), "dflt");
            // Spaces are a value (a database named "  " is refused by its own check).
            assert_eq!(vars.get("B").unwrap().as_deref(), Some("  "));
            assert_eq!(vars.port_or("A", 5432).unwrap(), 5432);
            assert!(vars.bool_or("A", true).unwrap());
        });
    }

    #[test]
    fn every_boolean_spelling_is_accepted_in_any_case() {
        for (text, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("yes", true),
            ("On", true),
            ("false", false),
            ("0", false),
            ("No", false),
            (" off ", false),
        ] {
            assert_eq!(parse_bool("X", text).unwrap(), expected, "{text}");
        }
        let error = parse_bool("DB_DEBUG", "maybe").unwrap_err();
        assert_eq!(error.variable, "DB_DEBUG");
        assert_eq!(
            error.to_string(),
            "DB_DEBUG is invalid: \"maybe\" is not a boolean: expected true/false, 1/0, yes/no or on/off"
        );
    }

    #[test]
    fn a_non_utf8_variable_is_an_error_naming_it() {
        let lookup = |name: &str| match name {
            "DB_HOST" => Err(VarError::NotUnicode(OsString::from("x"))),
            _ => Err(VarError::NotPresent),
        };
        let vars = Vars::new(&lookup);
        let error = vars.string_or("DB_HOST", "h").unwrap_err();
        assert_eq!(error.to_string(), "DB_HOST is invalid: is not valid UTF-8");
        assert!(check_unicode(&vars, ["A", "DB_HOST"]).is_err());
        assert!(check_unicode(&vars, ["A"]).is_ok());
    }

    #[test]
    fn numbers_are_checked_against_their_range() {
        with(
            &[("P", "70000"), ("N", "-1"), ("W", "http"), ("Z", "0")],
            |vars| {
                let error = vars.port_or("P", 1).unwrap_err().to_string();
                assert_eq!(
                    error,
                    "P is invalid: \"70000\" is out of range: expected a whole number from 1 to 65535"
                );
                assert!(
                    vars.port_or("N", 1)
                        .unwrap_err()
                        .to_string()
                        .contains("out of range")
                );
                assert!(
                    vars.port_or("W", 1)
                        .unwrap_err()
                        .to_string()
                        .contains("not a whole number")
                );
                assert!(vars.port_or("Z", 1).is_err());
                assert_eq!(vars.listen_port_or("Z", 1).unwrap(), 0);
                assert_eq!(vars.millis_in("Z", 5, 0..=10).unwrap(), Duration::ZERO);
                assert!(vars.millis_in("P", 5, 0..=10).is_err());
            },
        );
    }
}
