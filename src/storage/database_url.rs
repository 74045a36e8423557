//! The database URL: checked once, where it is read, and never printed with
//! its password.

use std::fmt;
use std::str::FromStr;

use super::Backend;

/// A database URL naming a backend keyward supports: `sqlite:...`,
/// `postgres://...` or `postgresql://...`. `Display` and `Debug` hide the
/// password; [`DatabaseUrl::expose`] gives the URL to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: String,
    backend: Backend,
}

impl DatabaseUrl {
    /// Checks the scheme. The reason names only the scheme, so a mistyped
    /// URL's password is not echoed.
    pub fn parse(url: &str) -> Result<Self, String> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(format!(
                "unsupported database URL scheme; use sqlite://PATH or postgres://... (got {:?})",
                url.split(':').next().unwrap_or_default()
            ));
        };
        Ok(Self {
            url: url.to_owned(),
            backend,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// An in-memory SQLite database, which exists once per connection.
    pub fn is_in_memory(&self) -> bool {
        self.backend == Backend::Sqlite
            && (self.url.contains(":memory:") || self.url.contains("mode=memory"))
    }

    /// The URL as given, password included: for connecting, never for
    /// output.
    pub fn expose(&self) -> &str {
        &self.url
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        Self::parse(url)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_password(&self.url))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&redact_password(&self.url))
            .finish()
    }
}

/// A database URL (checked or not) without its password, for output and
/// `Debug`: the password of `user:password@` and the value of a `password=`
/// query parameter (sqlx's PostgreSQL driver reads both). It errs towards
/// hiding too much: everything up to the last `@` counts as user and
/// password, so a password with a raw `/`, `?` or `@` is hidden too, and so
/// is the value of every percent-encoded parameter name (it might decode to
/// `password`).
pub fn redact_password(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let mut redacted = String::with_capacity(url.len());
    let mut rest = url;
    if let Some(at) = url.rfind('@').filter(|&at| at > after_scheme)
        && let Some(colon) = url[after_scheme..at].find(':')
    {
        redacted.push_str(&url[..after_scheme + colon + 1]);
        redacted.push_str("***");
        rest = &url[at..];
    }
    match rest.split_once('?') {
        Some((before, query)) => {
            redacted.push_str(before);
            redacted.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    redacted.push('&');
                }
                match pair.split_once('=') {
                    Some((name, _)) if name == "password" || name.contains('%') => {
                        redacted.push_str(name);
                        redacted.push_str("=***");
                    }
                    _ => redacted.push_str(pair),
                }
            }
        }
        None => redacted.push_str(rest),
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_schemes_name_their_backend() {
        let backend = |url: &str| DatabaseUrl::parse(url).map(|url| url.backend());
        assert_eq!(backend("sqlite://keyward.db"), Ok(Backend::Sqlite));
        assert_eq!(backend("sqlite::memory:"), Ok(Backend::Sqlite));
        assert_eq!(backend("postgres://db/kw"), Ok(Backend::Postgres));
        assert_eq!(backend("postgresql://db/kw"), Ok(Backend::Postgres));
        assert_eq!(
            backend("mysql://kw:s3cret@db/kw"),
            Err(
                "unsupported database URL scheme; use sqlite://PATH or postgres://... (got \"mysql\")"
                    .into()
            )
        );
        assert!(
            DatabaseUrl::parse("sqlite::memory:")
                .unwrap()
                .is_in_memory()
        );
        assert!(!DatabaseUrl::parse("sqlite://k.db").unwrap().is_in_memory());
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact_password("postgres://kw:s3cret@db:5432/kw"),
            "postgres://kw:***@db:5432/kw"
        );
        assert_eq!(
            redact_password("sqlite://keyward.db"),
            "sqlite://keyward.db"
        );
        assert_eq!(
            redact_password("postgres://kw@db/kw?sslmode=require"),
            "postgres://kw@db/kw?sslmode=require"
        );
        assert_eq!(
            redact_password("postgres://kw:p@ss/w?rd@db/kw"),
            "postgres://kw:***@db/kw"
        );
        let url = DatabaseUrl::parse("postgres://kw:s3cret@db/kw").unwrap();
        assert_eq!(url.to_string(), "postgres://kw:***@db/kw");
        assert_eq!(
            format!("{url:?}"),
            "DatabaseUrl(\"postgres://kw:***@db/kw\")"
        );
        assert_eq!(url.expose(), "postgres://kw:s3cret@db/kw");
    }

    #[test]
    fn a_password_in_the_query_is_not_printed() {
        assert_eq!(
            redact_password(
                "postgres://kw@db/kw?sslmode=require&password=s3cret&application_name=a"
            ),
            "postgres://kw@db/kw?sslmode=require&password=***&application_name=a"
        );
        assert_eq!(
            redact_password("postgres://db/kw?password=s3@cret"),
            "postgres://db/kw?password=***"
        );
        // A name that decodes to `password` is a password too.
        assert_eq!(
            redact_password("postgres://db/kw?pass%77ord=s3cret"),
            "postgres://db/kw?pass%77ord=***"
        );
        assert_eq!(
            redact_password("postgres://kw:one@db/kw?password=two"),
            "postgres://kw:***@db/kw?password=***"
        );
    }
}
