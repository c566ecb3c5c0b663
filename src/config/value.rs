//! Small value types written as strings in the configuration: durations
//! ("90s", "5m", "5d"), rates ("10/s"), cron expressions, time zones and
//! secret references. Each parses itself during deserialization, so a bad
//! value is reported at its own position in the file.

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A duration written like "90s", "5m", "12h" or "5d".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                format!("invalid duration {s:?} ({e}); write it like \"90s\", \"5m\" or \"5d\"")
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A rate written like "10/s", "600/m" or "5000/h".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    /// The governor quota for this rate, allowing a burst of one period's worth.
    pub fn quota(&self) -> governor::Quota {
        let interval = self.per / self.count.get();
        governor::Quota::with_period(interval.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| governor::Quota::per_second(self.count))
            .allow_burst(self.count)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid rate {s:?}; write it like \"10/s\", \"600/m\" or \"5000/h\"");
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count =
            NonZeroU32::new(count).ok_or_else(|| format!("rate {s:?} must be above zero"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// A rate limit: a [`Rate`], or "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Off,
    Limit(Rate),
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "off" {
            Ok(RateLimit::Off)
        } else {
            s.parse()
                .map(RateLimit::Limit)
                .map_err(|e| format!("{e}, or \"off\""))
        }
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimit::Off => f.write_str("off"),
            RateLimit::Limit(rate) => rate.fmt(f),
        }
    }
}

/// A cron expression: the classic five fields (minute hour day month
/// weekday) or six/seven with seconds and year, as the `cron` crate reads them.
#[derive(Debug, Clone)]
pub struct CronExpr {
    pub source: String,
    pub schedule: cron::Schedule,
}

impl FromStr for CronExpr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields = s.split_whitespace().count();
        let (expanded, added) = match fields {
            5 => (format!("0 {s}"), "0 ".len()),
            6 | 7 => (s.to_string(), 0),
            n => {
                return Err(format!(
                    "invalid cron expression {s:?}: expected 5 fields (minute hour day month weekday), found {n}"
                ));
            }
        };
        let schedule = cron::Schedule::from_str(&expanded).map_err(|e| {
            format!(
                "invalid cron expression {s:?}: {}",
                cron_reason(&e.to_string(), added)
            )
        })?;
        Ok(CronExpr {
            source: s.to_string(),
            schedule,
        })
    }
}

/// The `cron` crate renders an error as the expression it parsed, a caret
/// line and a reason. A diagnostic is one line about what the operator
/// wrote, so keep the reason, or say where the caret points when there is
/// none; `added` is the length of the seconds field prepended to 5 fields.
fn cron_reason(rendered: &str, added: usize) -> String {
    let mut lines = rendered.lines();
    let (Some(_), Some(caret)) = (lines.next(), lines.next()) else {
        return rendered.trim().to_string();
    };
    let reason = lines.collect::<Vec<_>>().join(" ");
    match caret.find('^') {
        _ if !reason.trim().is_empty() => reason.trim().to_string(),
        Some(at) => format!(
            "cannot parse it from character {}",
            at.saturating_sub(added) + 1
        ),
        None => rendered.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// An IANA time zone name such as "Europe/Paris".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl FromStr for TimeZone {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<chrono_tz::Tz>().map(TimeZone).map_err(|_| {
            format!("unknown time zone {s:?}; use an IANA name like \"Europe/Paris\" or \"UTC\"")
        })
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone(chrono_tz::UTC)
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// Deserializes any `FromStr` type from a TOML string, reporting its error
/// message at the string's position.
macro_rules! deserialize_from_str {
    ($($ty:ty => $what:literal),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(V)
            }
        }
    )*};
}

deserialize_from_str! {
    HumanDuration => "a duration like \"90s\", \"5m\" or \"5d\"",
    Rate => "a rate like \"10/s\"",
    RateLimit => "a rate like \"10/s\", or \"off\"",
    CronExpr => "a cron expression like \"0 7 1 * *\"",
    TimeZone => "an IANA time zone name like \"Europe/Paris\"",
}

/// Where a secret comes from: `{ env = "NAME" }` or `{ file = "/path" }`.
/// Secrets are never written inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env {name}"),
            SecretRef::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

const SECRET_SHAPE: &str =
    "a secret is written { env = \"NAME\" } or { file = \"/path\" }, never inline";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SECRET_SHAPE)
            }
            // Any scalar is an inline secret: refuse it without echoing it.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(SECRET_SHAPE))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(SECRET_SHAPE))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(SECRET_SHAPE))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(E::custom(SECRET_SHAPE))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(E::custom(SECRET_SHAPE))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<String>()? {
                    if found.is_some() {
                        return Err(de::Error::custom(format!(
                            "{SECRET_SHAPE}: give only one of `env` or `file`"
                        )));
                    }
                    found = Some(match key.as_str() {
                        "env" => SecretRef::Env(map.next_value()?),
                        "file" => SecretRef::File(map.next_value()?),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown secret source `{other}`; {SECRET_SHAPE}"
                            )));
                        }
                    });
                }
                found.ok_or_else(|| de::Error::custom(SECRET_SHAPE))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Deserializes a list of secrets, `[{ env = "A" }, { file = "b" }]`. Anything
/// else is refused without being quoted: serde's own "invalid type" error
/// would echo a secret written inline as `secrets = "whsec_…"`.
pub fn secret_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<toml::Spanned<SecretRef>>, D::Error> {
    struct V;
    const SHAPE: &str =
        "a list of secrets is written [{ env = \"NAME\" }, { file = \"/path\" }], never inline";
    impl<'de> Visitor<'de> for V {
        type Value = Vec<toml::Spanned<SecretRef>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(SHAPE)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut secrets = Vec::new();
            while let Some(secret) = seq.next_element()? {
                secrets.push(secret);
            }
            Ok(secrets)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(E::custom(SHAPE))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(SHAPE))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(SHAPE))
        }
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(format!(
                "{SHAPE}: put the table in brackets"
            )))
        }
    }
    deserializer.deserialize_seq(V)
}

/// Where relative secret files are looked up.
#[derive(Debug, Clone)]
pub struct SecretContext {
    /// `$CREDENTIALS_DIRECTORY`, set by systemd's `LoadCredential=`.
    pub credentials_dir: Option<PathBuf>,
    /// The directory of the configuration file, used when there is no
    /// credentials directory.
    pub config_dir: PathBuf,
}

impl SecretContext {
    pub fn from_env(config_dir: &Path) -> Self {
        SecretContext {
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            config_dir: config_dir.to_path_buf(),
        }
    }
}

impl SecretRef {
    /// Reads the secret. The error names the variable or file, never the value.
    pub fn resolve(&self, context: &SecretContext) -> Result<SecretString, String> {
        let value = match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => {
                    return Err(format!("environment variable {name} is not set"));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("environment variable {name} is not valid UTF-8"));
                }
            },
            SecretRef::File(path) => {
                let full = if path.is_absolute() {
                    path.clone()
                } else {
                    context
                        .credentials_dir
                        .as_deref()
                        .unwrap_or(&context.config_dir)
                        .join(path)
                };
                std::fs::read_to_string(&full)
                    .map_err(|e| {
                        format!(
                            "cannot read secret file {}: {}",
                            full.display(),
                            io_reason(&e)
                        )
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
            }
        };
        if value.is_empty() {
            return Err(format!("secret from {self} is empty"));
        }
        Ok(SecretString::from(value))
    }
}

/// An I/O error's reason without the "(os error N)" noise.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "it is a directory".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_an_operator_writes_them() {
        assert_eq!(
            "90s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            "5m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            "5d".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(5 * 86400)
        );
        assert!("5 parsecs".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn rates_need_a_unit_and_a_positive_count() {
        let rate: Rate = "600/m".parse().unwrap();
        assert_eq!(rate.count.get(), 600);
        assert_eq!(rate.per, Duration::from_secs(60));
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10".parse::<Rate>().is_err());
        assert!("10/fortnight".parse::<Rate>().is_err());
    }

    #[test]
    fn cron_accepts_five_and_six_fields() {
        assert!("0 7 1 * *".parse::<CronExpr>().is_ok());
        assert!("0 0 7 1 * *".parse::<CronExpr>().is_ok());
        assert!("61 7 1 * *".parse::<CronExpr>().is_err());
        assert!("7 1 *".parse::<CronExpr>().is_err());
    }
}

/// Serializes the string-written types back to the string an operator wrote.
macro_rules! serialize_display {
    ($($ty:ty),*) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}

serialize_display!(HumanDuration, Rate, RateLimit, CronExpr, TimeZone);
