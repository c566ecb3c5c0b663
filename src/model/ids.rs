//! Identifier newtypes. An id is a short slug that is safe in a URL, a file
//! name, a log line and a sled key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} {value:?}: use 1 to 64 characters from a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
)]
pub struct IdError {
    what: &'static str,
    value: String,
}

fn check_slug(what: &'static str, value: &str) -> Result<(), IdError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IdError {
            what,
            value: value.to_string(),
        })
    }
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                check_slug($what, s)?;
                Ok(Self(s.to_string()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

slug_id!(
    /// A customer's id in csmd (the customer file's `id`).
    CustomerId,
    "customer id"
);
slug_id!(
    /// A configured connector's name, as in `/webhooks/{name}`.
    ConnectorName,
    "connector name"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_url_and_key_safe() {
        assert!("acme-corp".parse::<CustomerId>().is_ok());
        assert!("Acme".parse::<CustomerId>().is_err());
        assert!("a/b".parse::<CustomerId>().is_err());
        assert!("".parse::<CustomerId>().is_err());
        assert!("-x".parse::<ConnectorName>().is_err());
    }
}
