//! `--init-file`: basins and streams declared in a JSON file, applied with ensure
//! semantics at every start (what is missing is created, configs that differ are
//! replaced, everything else is left alone).
//!
//! ```json
//! {"basins": [{"name": "my-basin",
//!              "config": {"default_stream_config": {"retention_policy": "7days"},
//!                         "create_stream_on_append": true},
//!              "streams": [{"name": "events",
//!                           "config": {"delete_on_empty": {"min_age": "1h"}}}]}]}
//! ```
//! Durations are human-readable (`"1h"`, `"2h 30m"`, `"7days"`); retention may also be
//! `"infinite"`. Unknown fields are errors, so a typo does not pass silently.

use std::num::NonZeroU64;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;
use sluice_shards::config::{
    BasinConfig, Cipher, RetentionPolicy, StreamConfigSpec, TimestampingMode,
};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::Shard;
use tracing::info;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitFile {
    #[serde(default)]
    basins: Vec<BasinEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasinEntry {
    name: BasinName,
    #[serde(default)]
    config: Option<BasinSpec>,
    #[serde(default)]
    streams: Vec<StreamEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamEntry {
    name: StreamName,
    #[serde(default)]
    config: Option<StreamSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasinSpec {
    #[serde(default)]
    default_stream_config: Option<StreamSpec>,
    #[serde(default)]
    stream_cipher: Option<Cipher>,
    #[serde(default)]
    create_stream_on_append: Option<bool>,
    #[serde(default)]
    create_stream_on_read: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamSpec {
    #[serde(default)]
    storage_class: Option<String>,
    #[serde(default, deserialize_with = "retention")]
    retention_policy: Option<RetentionPolicy>,
    #[serde(default)]
    timestamping: Option<TimestampingSpec>,
    #[serde(default)]
    delete_on_empty: Option<DeleteOnEmptySpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimestampingSpec {
    #[serde(default)]
    mode: Option<TimestampingMode>,
    #[serde(default)]
    uncapped: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteOnEmptySpec {
    #[serde(default, deserialize_with = "duration")]
    min_age: Option<Duration>,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| D::Error::custom(format!("invalid duration {text:?}: {e}")))
}

fn retention<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RetentionPolicy>, D::Error> {
    let text = String::deserialize(d)?;
    if text.eq_ignore_ascii_case("infinite") {
        return Ok(Some(RetentionPolicy::Infinite));
    }
    let age = humantime::parse_duration(&text)
        .map_err(|e| D::Error::custom(format!("invalid retention_policy {text:?}: {e}")))?;
    NonZeroU64::new(age.as_secs())
        .map(|secs| Some(RetentionPolicy::Age(secs)))
        .ok_or_else(|| D::Error::custom("retention age must be at least 1 second"))
}

impl StreamSpec {
    fn to_engine(&self) -> StreamConfigSpec {
        let timestamping = self.timestamping.as_ref();
        StreamConfigSpec {
            storage_class: self.storage_class.clone(),
            retention_policy: self.retention_policy,
            timestamping_mode: timestamping.and_then(|t| t.mode),
            timestamping_uncapped: timestamping.and_then(|t| t.uncapped),
            delete_on_empty_min_age_secs: self
                .delete_on_empty
                .as_ref()
                .map(|d| d.min_age.map_or(0, |age| age.as_secs())),
        }
    }
}

impl BasinSpec {
    fn to_engine(&self) -> BasinConfig {
        BasinConfig {
            default_stream_config: self
                .default_stream_config
                .as_ref()
                .map(StreamSpec::to_engine)
                .unwrap_or_default(),
            stream_cipher: self.stream_cipher,
            create_stream_on_append: self.create_stream_on_append.unwrap_or(false),
            create_stream_on_read: self.create_stream_on_read.unwrap_or(false),
        }
    }
}

impl InitFile {
    pub fn load(path: &Path) -> anyhow::Result<InitFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading init file {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing init file {}", path.display()))
    }

    /// Ensure every declared basin and stream, in file order.
    pub async fn apply(&self, shard: &Rc<Shard>) -> anyhow::Result<()> {
        for basin in &self.basins {
            let config = basin
                .config
                .as_ref()
                .map(BasinSpec::to_engine)
                .unwrap_or_default();
            let (_, outcome) = shard
                .ensure_basin(basin.name.clone(), config)
                .await
                .map_err(|e| anyhow!("init file: basin {}: {e}", basin.name))?;
            info!(basin = %basin.name, ?outcome, "init file");
            for stream in &basin.streams {
                let spec = stream
                    .config
                    .as_ref()
                    .map(StreamSpec::to_engine)
                    .unwrap_or_default();
                let (_, outcome) = shard
                    .ensure_stream(basin.name.clone(), stream.name.clone(), spec)
                    .await
                    .map_err(|e| {
                        anyhow!("init file: stream {}/{}: {e}", basin.name, stream.name)
                    })?;
                info!(basin = %basin.name, stream = %stream.name, ?outcome, "init file");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations_and_rejects_unknown_fields() {
        let f: InitFile = serde_json::from_str(
            r#"{"basins":[{"name":"init-basin","config":{"default_stream_config":{"retention_policy":"1h"}},
                "streams":[{"name":"s","config":{"retention_policy":"infinite","delete_on_empty":{"min_age":"2h"}}}]}]}"#,
        )
        .unwrap();
        let basin = &f.basins[0];
        assert_eq!(
            basin
                .config
                .as_ref()
                .unwrap()
                .to_engine()
                .default_stream_config
                .retention_policy,
            Some(RetentionPolicy::Age(NonZeroU64::new(3600).unwrap()))
        );
        let s = basin.streams[0].config.as_ref().unwrap().to_engine();
        assert_eq!(s.retention_policy, Some(RetentionPolicy::Infinite));
        assert_eq!(s.delete_on_empty_min_age_secs, Some(7200));
        assert!(serde_json::from_str::<InitFile>(r#"{"basins":[],"extra":1}"#).is_err());
        assert!(serde_json::from_str::<InitFile>(
            r#"{"basins":[{"name":"init-basin","config":{"default_stream_config":{"retention_policy":"0s"}}}]}"#
        )
        .is_err());
    }
}
