//! The vocabulary every table of the config file is validated with. Each
//! subsystem owns its table (its serde `Raw*` struct, its defaults and its
//! validator); a validator fails with a [`SettingError`] naming the key, and
//! `config` adds the file. This module imports nothing from the crate, so
//! any subsystem can use it.

use std::fmt;
use std::time::Duration;

/// A value that cannot be used: the key as written in the file
/// (`cache.capacity`, `http.routes[2].path`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub key: String,
    pub reason: String,
}

impl SettingError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Names `key` in a check's reason: `.map_err(SettingError::at("cache.capacity"))`.
    pub fn at(key: &str) -> impl FnOnce(String) -> Self + '_ {
        move |reason| Self::new(key, reason)
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for SettingError {}

/// `value` if it lies within `min..=max`.
pub fn in_range<T: PartialOrd + fmt::Display + Copy>(
    value: T,
    min: T,
    max: T,
) -> Result<T, String> {
    if value < min || value > max {
        return Err(format!("must be between {min} and {max}, got {value}"));
    }
    Ok(value)
}

/// A number of seconds within `min..=max` (NaN and infinities refused).
pub fn seconds(value: f64, min: f64, max: f64) -> Result<Duration, String> {
    if !value.is_finite() || value < min || value > max {
        return Err(format!(
            "must be between {min} and {max} seconds, got {value}"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

/// [`seconds`] of a value the file may leave out (`default` then, as is).
pub fn seconds_or(
    value: Option<f64>,
    default: Duration,
    min: f64,
    max: f64,
) -> Result<Duration, String> {
    value.map_or(Ok(default), |value| seconds(value, min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_the_bounds_and_the_value() {
        assert_eq!(in_range(5, 1, 10), Ok(5));
        assert_eq!(
            in_range(0, 1, 10),
            Err("must be between 1 and 10, got 0".into())
        );
        assert_eq!(seconds(0.5, 0.01, 1.0), Ok(Duration::from_millis(500)));
        assert_eq!(
            seconds(f64::NAN, 0.01, 1.0),
            Err("must be between 0.01 and 1 seconds, got NaN".into())
        );
        assert_eq!(
            seconds_or(None, Duration::from_secs(9), 0.0, 1.0),
            Ok(Duration::from_secs(9)),
            "a default is not checked against the file's range"
        );
    }
}
