//! The JSON shapes of the control plane (API §3–§4), and their conversion to and from the
//! engine's types. Request forms reject what the spec rejects; response forms always carry
//! every key.

use std::num::NonZeroU64;

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_shards::catalogue::{BasinInfo, StreamInfo};
use sluice_shards::clock::UnixNanos;
use sluice_shards::config::{
    BasinConfig, BasinReconfiguration, Cipher, Patch, RetentionPolicy, StreamConfig,
    StreamConfigSpec, StreamReconfiguration, TimestampingMode,
};
use sluice_shards::names::{BasinName, StreamName};

use super::error::{ApiError, ApiResult};

/// Parse a JSON request body. Every syntax, type or shape error is `bad_json`.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadJson(e.to_string()))
}

pub fn rfc3339(t: UnixNanos) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A field that distinguishes absent (`Keep`), `null` (`Clear`) and a value (`Set`).
/// Use with `#[serde(default)]`.
#[derive(Debug)]
pub struct Field<T>(Patch<T>);

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field(Patch::Keep)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Field(match Option::<T>::deserialize(d)? {
            None => Patch::Clear,
            Some(v) => Patch::Set(v),
        }))
    }
}

/// For optional booleans where `null` is an error, not "unset".
fn present_not_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetentionJson {
    Age(u64),
    Infinite(serde::de::IgnoredAny),
}

impl RetentionJson {
    fn validate(self) -> ApiResult<RetentionPolicy> {
        match self {
            RetentionJson::Age(secs) => NonZeroU64::new(secs)
                .map(RetentionPolicy::Age)
                .ok_or_else(|| ApiError::Invalid("age must be greater than 0 seconds".into())),
            RetentionJson::Infinite(_) => Ok(RetentionPolicy::Infinite),
        }
    }
}

fn retention_value(r: RetentionPolicy) -> Value {
    match r {
        RetentionPolicy::Age(secs) => json!({ "age": secs.get() }),
        RetentionPolicy::Infinite => json!({ "infinite": {} }),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct TimestampingJson {
    #[serde(default)]
    mode: Option<TimestampingMode>,
    #[serde(default)]
    uncapped: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteOnEmptyJson {
    #[serde(default)]
    min_age_secs: Option<u64>,
}

/// StreamConfig, request form: every field optional.
#[derive(Debug, Default, Deserialize)]
pub struct StreamConfigJson {
    #[serde(default)]
    storage_class: Option<String>,
    #[serde(default)]
    retention_policy: Option<RetentionJson>,
    #[serde(default)]
    timestamping: Option<TimestampingJson>,
    #[serde(default)]
    delete_on_empty: Option<DeleteOnEmptyJson>,
}

impl StreamConfigJson {
    pub fn validate(self) -> ApiResult<StreamConfigSpec> {
        let timestamping = self.timestamping.unwrap_or_default();
        Ok(StreamConfigSpec {
            storage_class: self.storage_class,
            retention_policy: self
                .retention_policy
                .map(RetentionJson::validate)
                .transpose()?,
            timestamping_mode: timestamping.mode,
            timestamping_uncapped: timestamping.uncapped,
            // Inside a given object the minimum age defaults to 0.
            delete_on_empty_min_age_secs: self.delete_on_empty.map(|d| d.min_age_secs.unwrap_or(0)),
        })
    }
}

/// The fully resolved StreamConfig response.
pub fn stream_config_value(c: &StreamConfig) -> Value {
    json!({
        "storage_class": c.storage_class,
        "retention_policy": retention_value(c.retention_policy),
        "timestamping": { "mode": c.timestamping_mode.name(), "uncapped": c.timestamping_uncapped },
        "delete_on_empty": { "min_age_secs": c.delete_on_empty_min_age_secs },
    })
}

/// A partial StreamConfig as a basin shows its defaults: `null` for whatever is unset.
fn stream_spec_value(s: &StreamConfigSpec) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    let timestamping = if s.timestamping_mode.is_none() && s.timestamping_uncapped.is_none() {
        Value::Null
    } else {
        json!({ "mode": s.timestamping_mode.map(TimestampingMode::name), "uncapped": s.timestamping_uncapped })
    };
    json!({
        "storage_class": s.storage_class,
        "retention_policy": s.retention_policy.map(retention_value),
        "timestamping": timestamping,
        "delete_on_empty": s.delete_on_empty_min_age_secs.map(|n| json!({ "min_age_secs": n })),
    })
}

/// BasinConfig, request form.
#[derive(Debug, Default, Deserialize)]
pub struct BasinConfigJson {
    #[serde(default)]
    default_stream_config: Option<StreamConfigJson>,
    #[serde(default)]
    stream_cipher: Option<Cipher>,
    #[serde(default)]
    create_stream_on_append: bool,
    #[serde(default)]
    create_stream_on_read: bool,
}

impl BasinConfigJson {
    pub fn validate(self) -> ApiResult<BasinConfig> {
        Ok(BasinConfig {
            default_stream_config: self
                .default_stream_config
                .map(StreamConfigJson::validate)
                .transpose()?
                .unwrap_or_default(),
            stream_cipher: self.stream_cipher,
            create_stream_on_append: self.create_stream_on_append,
            create_stream_on_read: self.create_stream_on_read,
        })
    }
}

pub fn basin_config_value(c: &BasinConfig) -> Value {
    json!({
        "default_stream_config": stream_spec_value(&c.default_stream_config),
        "stream_cipher": c.stream_cipher.map(Cipher::name),
        "create_stream_on_append": c.create_stream_on_append,
        "create_stream_on_read": c.create_stream_on_read,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct TimestampingPatchJson {
    #[serde(default)]
    mode: Field<TimestampingMode>,
    #[serde(default)]
    uncapped: Field<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteOnEmptyPatchJson {
    #[serde(default)]
    min_age_secs: Field<u64>,
}

/// StreamReconfiguration: absent leaves a field, `null` clears it.
#[derive(Debug, Default, Deserialize)]
pub struct StreamReconfigurationJson {
    #[serde(default)]
    storage_class: Field<String>,
    #[serde(default)]
    retention_policy: Field<RetentionJson>,
    #[serde(default)]
    timestamping: Field<TimestampingPatchJson>,
    #[serde(default)]
    delete_on_empty: Field<DeleteOnEmptyPatchJson>,
}

fn map_patch<T, U>(p: Patch<T>, f: impl FnOnce(T) -> ApiResult<U>) -> ApiResult<Patch<U>> {
    Ok(match p {
        Patch::Keep => Patch::Keep,
        Patch::Clear => Patch::Clear,
        Patch::Set(v) => Patch::Set(f(v)?),
    })
}

impl StreamReconfigurationJson {
    pub fn validate(self) -> ApiResult<StreamReconfiguration> {
        let (timestamping_mode, timestamping_uncapped) = match self.timestamping.0 {
            Patch::Keep => (Patch::Keep, Patch::Keep),
            Patch::Clear => (Patch::Clear, Patch::Clear),
            Patch::Set(t) => (map_patch(t.mode.0, Ok)?, t.uncapped.0),
        };
        Ok(StreamReconfiguration {
            storage_class: self.storage_class.0,
            retention_policy: map_patch(self.retention_policy.0, RetentionJson::validate)?,
            timestamping_mode,
            timestamping_uncapped,
            delete_on_empty_min_age_secs: match self.delete_on_empty.0 {
                Patch::Keep => Patch::Keep,
                Patch::Clear => Patch::Clear,
                Patch::Set(d) => d.min_age_secs.0,
            },
        })
    }
}

/// BasinReconfiguration.
#[derive(Debug, Default, Deserialize)]
pub struct BasinReconfigurationJson {
    #[serde(default)]
    default_stream_config: Field<StreamReconfigurationJson>,
    #[serde(default)]
    stream_cipher: Field<Cipher>,
    #[serde(default, deserialize_with = "present_not_null")]
    create_stream_on_append: Option<bool>,
    #[serde(default, deserialize_with = "present_not_null")]
    create_stream_on_read: Option<bool>,
}

impl BasinReconfigurationJson {
    pub fn validate(self) -> ApiResult<BasinReconfiguration> {
        Ok(BasinReconfiguration {
            default_stream_config: map_patch(self.default_stream_config.0, |p| p.validate())?,
            stream_cipher: map_patch(self.stream_cipher.0, Ok)?,
            create_stream_on_append: self.create_stream_on_append,
            create_stream_on_read: self.create_stream_on_read,
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct CreateBasinRequest {
    pub basin: BasinName,
    #[serde(default)]
    pub config: Option<BasinConfigJson>,
    #[serde(default)]
    #[allow(dead_code)] // accepted and ignored, as the reference does
    pub location: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EnsureBasinRequest {
    #[serde(default)]
    pub config: Option<BasinConfigJson>,
    #[serde(default)]
    #[allow(dead_code)] // accepted and ignored, as the reference does
    pub location: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CreateStreamRequest {
    pub stream: StreamName,
    #[serde(default)]
    pub config: Option<StreamConfigJson>,
}

pub fn basin_info_value(info: &BasinInfo) -> Value {
    json!({
        "name": info.name.as_str(),
        "location": Value::Null,
        "created_at": rfc3339(info.created_at),
        "deleted_at": info.deleted_at.map(rfc3339),
        "state": if info.deleted_at.is_some() { "deleting" } else { "active" },
    })
}

pub fn stream_info_value(info: &StreamInfo) -> Value {
    json!({
        "name": info.name.as_str(),
        "created_at": rfc3339(info.created_at),
        "deleted_at": info.deleted_at.map(rfc3339),
        "cipher": info.cipher.map(Cipher::name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basin_config_response_form() {
        let c = parse::<BasinConfigJson>(
            br#"{"default_stream_config":{"retention_policy":{"age":3600}},"create_stream_on_append":true}"#,
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(
            basin_config_value(&c),
            json!({"default_stream_config":{"storage_class":null,"retention_policy":{"age":3600},"timestamping":null,"delete_on_empty":null},
                   "stream_cipher":null,"create_stream_on_append":true,"create_stream_on_read":false})
        );
        assert_eq!(
            basin_config_value(&BasinConfig::default())["default_stream_config"],
            Value::Null
        );
    }

    #[test]
    fn age_zero_is_invalid_and_null_bool_is_bad_json() {
        let err = parse::<StreamConfigJson>(br#"{"retention_policy":{"age":0}}"#)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(matches!(err, ApiError::Invalid(_)));
        assert!(matches!(
            parse::<BasinReconfigurationJson>(br#"{"create_stream_on_read":null}"#),
            Err(ApiError::BadJson(_))
        ));
    }

    #[test]
    fn patch_absent_null_value() {
        let p = parse::<StreamReconfigurationJson>(
            br#"{"storage_class":null,"timestamping":{"mode":"arrival"}}"#,
        )
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(p.storage_class, Patch::Clear);
        assert_eq!(p.timestamping_mode, Patch::Set(TimestampingMode::Arrival));
        assert_eq!(p.timestamping_uncapped, Patch::Keep);
        assert_eq!(p.retention_policy, Patch::Keep);
    }

    #[test]
    fn cipher_names() {
        for name in ["aegis-256", "aes-256-gcm"] {
            let c = parse::<BasinConfigJson>(format!(r#"{{"stream_cipher":"{name}"}}"#).as_bytes())
                .unwrap()
                .validate()
                .unwrap();
            assert_eq!(basin_config_value(&c)["stream_cipher"], json!(name));
        }
    }

    #[test]
    fn infinite_retention_round_trip() {
        let s = parse::<StreamConfigJson>(br#"{"retention_policy":{"infinite":{}}}"#)
            .unwrap()
            .validate()
            .unwrap();
        let c = s.resolve(&StreamConfigSpec::default());
        assert_eq!(
            stream_config_value(&c)["retention_policy"],
            json!({"infinite":{}})
        );
    }
}
