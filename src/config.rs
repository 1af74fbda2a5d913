//! Settings: `config/default.toml` (compiled in) ← `--config FILE` ←
//! `DURASAGA__SECTION__KEY` environment variables ← command-line flags.
//!
//! Invariant: every setting has a documented default in `config/default.toml`;
//! unknown keys are errors, so a typo never silently falls back to a default.

use crate::domain::{ExhaustedPolicy, SagaPolicy};
use crate::persistence::Durability;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The defaults, documented, as shipped.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub storage: StorageSettings,
    pub http: HttpSettings,
    pub saga: SagaSettings,
    pub actors: ActorSettings,
    pub mailbox: MailboxSettings,
    pub supervision: SupervisionSettings,
    pub idempotency: IdempotencySettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub cache_mb: u64,
    pub min_free_mb: u64,
    /// The four databases flush one at a time (see `persistence::FlushTurns`).
    pub flush_in_turn: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: String,
    pub api_keys: Vec<String>,
    pub max_body_bytes: u64,
    pub max_wait_seconds: u64,
    pub shutdown_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnExhausted {
    Compensate,
    Pause,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SagaSettings {
    pub reply_timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub on_exhausted: OnExhausted,
    /// Most orders in flight (not settled, or with messages not delivered
    /// yet); beyond it `POST /orders` answers 503.
    pub max_in_flight: u64,
    /// After a restart with sagas in flight, their reply timers are held
    /// while the backlog left by the crash drains, at most this long.
    pub recovery_hold_max_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxSettings {
    pub max_attempts: u32,
    pub max_depth: usize,
    pub batch: usize,
    /// How long the order-history view lets messages gather before a commit.
    pub view_linger_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionSettings {
    pub max_restarts: u32,
    pub window_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    pub retention_hours: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults ← `file` ← environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut f = Figment::new().merge(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            f = f.merge(Toml::file(path));
        }
        f = f.merge(Env::prefixed("DURASAGA__").split("__").lowercase(true));
        let s: Settings = f.extract().map_err(Box::new)?;
        s.validate()?;
        Ok(s)
    }

    /// The compiled-in defaults alone (tests).
    pub fn defaults() -> Self {
        // The shipped defaults are checked by a unit test, so this cannot fail.
        Figment::new()
            .merge(Toml::string(DEFAULT_TOML))
            .extract()
            .unwrap_or_else(|e| panic!("config/default.toml is invalid: {e}"))
    }

    /// Applies overrides as if they came last (flags).
    pub fn with(self, patch: impl Serialize) -> Result<Self, ConfigError> {
        let s: Settings = Figment::from(Serialized::defaults(self))
            .merge(Serialized::defaults(patch))
            .extract()
            .map_err(Box::new)?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.saga.max_attempts == 0 {
            return bad("saga.max_attempts must be at least 1");
        }
        if self.saga.max_in_flight == 0 {
            return bad("saga.max_in_flight must be at least 1");
        }
        if self.saga.reply_timeout_ms == 0 {
            return bad("saga.reply_timeout_ms must be positive");
        }
        // Milliseconds are added to clock readings as i64: keep them far
        // from overflowing (10^15 ms is about 31,000 years).
        const MAX_MS: u64 = 1_000_000_000_000_000;
        if self.saga.reply_timeout_ms > MAX_MS || self.saga.recovery_hold_max_ms > MAX_MS {
            return bad(
                "saga.reply_timeout_ms and saga.recovery_hold_max_ms must be at most 10^15",
            );
        }
        // It delays every view update, and a view actor lingering past its
        // share of the shutdown (a third) would commit after it.
        if self.mailbox.view_linger_ms > 1_000
            || self.mailbox.view_linger_ms.saturating_mul(3) >= self.http.shutdown_timeout_ms
        {
            return bad(
                "mailbox.view_linger_ms must be at most 1000 and under a third of http.shutdown_timeout_ms",
            );
        }
        if self.mailbox.max_attempts == 0 || self.mailbox.batch == 0 || self.mailbox.max_depth == 0
        {
            return bad(
                "mailbox.max_attempts, mailbox.batch and mailbox.max_depth must be at least 1",
            );
        }
        if !matches!(self.log.format.as_str(), "pretty" | "json") {
            return bad("log.format must be \"pretty\" or \"json\"");
        }
        if self.http.bind.parse::<std::net::SocketAddr>().is_err() {
            return bad("http.bind must be an address like 127.0.0.1:8080");
        }
        Ok(())
    }

    /// The saga timeouts and retry limits as the domain wants them.
    pub fn saga_policy(&self) -> SagaPolicy {
        SagaPolicy {
            reply_timeout_ms: self.saga.reply_timeout_ms as i64,
            max_attempts: self.saga.max_attempts,
            backoff_base_ms: self.saga.backoff_base_ms as i64,
            backoff_max_ms: self.saga.backoff_max_ms as i64,
            on_exhausted: match self.saga.on_exhausted {
                OnExhausted::Compensate => ExhaustedPolicy::Compensate,
                OnExhausted::Pause => ExhaustedPolicy::Pause,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_defaults_load_and_validate() {
        let s = Settings::load(None).unwrap();
        assert_eq!(s.http.bind, "127.0.0.1:8080");
        assert_eq!(s.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(s.storage.durability, Durability::Flush);
        assert_eq!(s.mailbox.max_depth, 10_000);
        assert_eq!(s.saga.max_in_flight, 100_000);
        assert_eq!(s.saga.recovery_hold_max_ms, 60_000);
        assert_eq!(s.mailbox.view_linger_ms, 20);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn overrides_apply_and_are_validated() {
        let s = Settings::defaults()
            .with(serde_json::json!({"saga": {"max_attempts": 2}}))
            .unwrap();
        assert_eq!(s.saga_policy().max_attempts, 2);
        assert!(Settings::defaults()
            .with(serde_json::json!({"saga": {"max_attempts": 0}}))
            .is_err());
        assert!(Settings::defaults()
            .with(serde_json::json!({"http": {"bind": "nope"}}))
            .is_err());
        assert!(Settings::defaults()
            .with(serde_json::json!({"mailbox": {"view_linger_ms": 1001}}))
            .is_err());
        assert!(Settings::defaults()
            .with(serde_json::json!({"mailbox": {"view_linger_ms": 100},
                "http": {"shutdown_timeout_ms": 300}}))
            .is_err());
        assert!(Settings::defaults()
            .with(serde_json::json!({"saga": {"recovery_hold_max_ms": u64::MAX}}))
            .is_err());
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        assert!(Settings::load(Some(Path::new("/nonexistent/durasaga.toml"))).is_err());
    }
}
