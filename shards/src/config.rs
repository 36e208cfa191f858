//! Basin and stream configuration: the partial form a client requests (and a basin keeps as
//! defaults), the resolved form a stream lives by, and reconfiguration patches.
//!
//! These types are also persisted inside metadata values (as JSON), so their serde names are
//! part of the on-disk format: never rename them.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

/// Global defaults, used when neither the stream nor its basin sets a field (API §4.6).
pub const DEFAULT_STORAGE_CLASS: &str = "express";
pub const DEFAULT_RETENTION_AGE_SECS: u64 = 7 * 24 * 60 * 60;

/// How soon a stream's appends are committed to the object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageClass {
    /// As soon as the commit cadence allows: the lowest ack latency.
    Express,
    /// Gathered for a while first: fewer, larger objects and fewer billed requests.
    Standard,
}

impl StorageClass {
    /// The class a stream config names; `express` for any other name.
    pub fn named(name: &str) -> StorageClass {
        match name {
            "standard" => StorageClass::Standard,
            _ => StorageClass::Express,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetentionPolicy {
    /// Records expire this many seconds after they were written.
    Age(NonZeroU64),
    Infinite,
}

/// Its serde names are the API's, the init file's and the stored configuration's alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestampingMode {
    ClientPrefer,
    ClientRequire,
    Arrival,
}

impl TimestampingMode {
    pub fn name(self) -> &'static str {
        match self {
            TimestampingMode::ClientPrefer => "client-prefer",
            TimestampingMode::ClientRequire => "client-require",
            TimestampingMode::Arrival => "arrival",
        }
    }
}

/// Its serde names are the API's, the init file's and the stored configuration's alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cipher {
    #[serde(rename = "aegis-256")]
    Aegis256,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

impl Cipher {
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aegis256 => "aegis-256",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }
}

/// A stream configuration in which every field may be unset: what a client asks for, and
/// what a basin holds as defaults for new streams.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfigSpec {
    pub storage_class: Option<String>,
    pub retention_policy: Option<RetentionPolicy>,
    pub timestamping_mode: Option<TimestampingMode>,
    pub timestamping_uncapped: Option<bool>,
    /// `Some(0)` is kept distinct from `None`: a basin default of 0 overrides nothing but is
    /// shown back as set.
    pub delete_on_empty_min_age_secs: Option<u64>,
}

impl StreamConfigSpec {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Resolve each field: this spec, else the basin default, else the global default.
    pub fn resolve(&self, basin_defaults: &StreamConfigSpec) -> StreamConfig {
        StreamConfig {
            storage_class: self
                .storage_class
                .clone()
                .or_else(|| basin_defaults.storage_class.clone())
                .unwrap_or_else(|| DEFAULT_STORAGE_CLASS.to_owned()),
            retention_policy: self
                .retention_policy
                .or(basin_defaults.retention_policy)
                .unwrap_or(RetentionPolicy::Age(
                    NonZeroU64::new(DEFAULT_RETENTION_AGE_SECS).expect("non-zero constant"),
                )),
            timestamping_mode: self
                .timestamping_mode
                .or(basin_defaults.timestamping_mode)
                .unwrap_or(TimestampingMode::ClientPrefer),
            timestamping_uncapped: self
                .timestamping_uncapped
                .or(basin_defaults.timestamping_uncapped)
                .unwrap_or(false),
            delete_on_empty_min_age_secs: self
                .delete_on_empty_min_age_secs
                .or(basin_defaults.delete_on_empty_min_age_secs)
                .unwrap_or(0),
        }
    }

    /// Apply a patch with no fallback: a cleared field becomes unset (basin defaults).
    pub fn reconfigure(&mut self, patch: &StreamReconfiguration) {
        patch.storage_class.apply_to(&mut self.storage_class);
        patch.retention_policy.apply_to(&mut self.retention_policy);
        patch
            .timestamping_mode
            .apply_to(&mut self.timestamping_mode);
        patch
            .timestamping_uncapped
            .apply_to(&mut self.timestamping_uncapped);
        patch
            .delete_on_empty_min_age_secs
            .apply_to(&mut self.delete_on_empty_min_age_secs);
    }
}

/// A fully resolved stream configuration: what a stream actually lives by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    pub storage_class: String,
    pub retention_policy: RetentionPolicy,
    pub timestamping_mode: TimestampingMode,
    pub timestamping_uncapped: bool,
    /// 0 disables delete-on-empty.
    pub delete_on_empty_min_age_secs: u64,
}

impl StreamConfig {
    /// Apply a patch: a cleared field falls back to the basin default, else the global one.
    pub fn reconfigure(
        &mut self,
        patch: &StreamReconfiguration,
        basin_defaults: &StreamConfigSpec,
    ) {
        let mut spec = StreamConfigSpec {
            storage_class: Some(self.storage_class.clone()),
            retention_policy: Some(self.retention_policy),
            timestamping_mode: Some(self.timestamping_mode),
            timestamping_uncapped: Some(self.timestamping_uncapped),
            delete_on_empty_min_age_secs: Some(self.delete_on_empty_min_age_secs),
        };
        spec.reconfigure(patch);
        *self = spec.resolve(basin_defaults);
    }
}

/// One field of a reconfiguration: leave it, clear it, or set it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T: Clone> Patch<T> {
    pub fn apply_to(&self, field: &mut Option<T>) {
        match self {
            Patch::Keep => {}
            Patch::Clear => *field = None,
            Patch::Set(v) => *field = Some(v.clone()),
        }
    }
}

/// A partial update of a stream configuration (PATCH of a stream, or of basin defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReconfiguration {
    pub storage_class: Patch<String>,
    pub retention_policy: Patch<RetentionPolicy>,
    pub timestamping_mode: Patch<TimestampingMode>,
    pub timestamping_uncapped: Patch<bool>,
    pub delete_on_empty_min_age_secs: Patch<u64>,
}

/// A basin's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasinConfig {
    pub default_stream_config: StreamConfigSpec,
    pub stream_cipher: Option<Cipher>,
    pub create_stream_on_append: bool,
    pub create_stream_on_read: bool,
}

/// A partial update of a basin configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BasinReconfiguration {
    /// `Clear` resets the defaults to all unset; `Set` applies the nested patch.
    pub default_stream_config: Patch<StreamReconfiguration>,
    pub stream_cipher: Patch<Cipher>,
    pub create_stream_on_append: Option<bool>,
    pub create_stream_on_read: Option<bool>,
}

impl BasinConfig {
    pub fn reconfigure(&mut self, patch: &BasinReconfiguration) {
        match &patch.default_stream_config {
            Patch::Keep => {}
            Patch::Clear => self.default_stream_config = StreamConfigSpec::default(),
            Patch::Set(p) => self.default_stream_config.reconfigure(p),
        }
        patch.stream_cipher.apply_to(&mut self.stream_cipher);
        if let Some(v) = patch.create_stream_on_append {
            self.create_stream_on_append = v;
        }
        if let Some(v) = patch.create_stream_on_read {
            self.create_stream_on_read = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_shown_are_the_names_read() {
        use serde_json::{from_value, to_value, Value};
        for mode in [
            TimestampingMode::ClientPrefer,
            TimestampingMode::ClientRequire,
            TimestampingMode::Arrival,
        ] {
            assert_eq!(to_value(mode).unwrap(), Value::from(mode.name()));
            assert_eq!(
                from_value::<TimestampingMode>(mode.name().into()).unwrap(),
                mode
            );
        }
        for cipher in [Cipher::Aegis256, Cipher::Aes256Gcm] {
            assert_eq!(to_value(cipher).unwrap(), Value::from(cipher.name()));
            assert_eq!(from_value::<Cipher>(cipher.name().into()).unwrap(), cipher);
        }
    }

    fn age(s: u64) -> RetentionPolicy {
        RetentionPolicy::Age(NonZeroU64::new(s).unwrap())
    }

    #[test]
    fn resolution_order() {
        let basin = StreamConfigSpec {
            retention_policy: Some(age(3600)),
            timestamping_mode: Some(TimestampingMode::Arrival),
            ..Default::default()
        };
        let stream = StreamConfigSpec {
            timestamping_mode: Some(TimestampingMode::ClientRequire),
            ..Default::default()
        };
        let c = stream.resolve(&basin);
        assert_eq!(c.storage_class, "express");
        assert_eq!(c.retention_policy, age(3600));
        assert_eq!(c.timestamping_mode, TimestampingMode::ClientRequire);
        assert!(!c.timestamping_uncapped);
        assert_eq!(c.delete_on_empty_min_age_secs, 0);
    }

    #[test]
    fn stream_patch_clear_falls_back_to_basin_default() {
        let basin = StreamConfigSpec {
            retention_policy: Some(age(60)),
            ..Default::default()
        };
        let mut c = StreamConfigSpec {
            retention_policy: Some(RetentionPolicy::Infinite),
            storage_class: Some("standard".into()),
            ..Default::default()
        }
        .resolve(&basin);
        c.reconfigure(
            &StreamReconfiguration {
                retention_policy: Patch::Clear,
                ..Default::default()
            },
            &basin,
        );
        assert_eq!(c.retention_policy, age(60));
        assert_eq!(c.storage_class, "standard");
    }

    #[test]
    fn basin_patch_nested() {
        let mut b = BasinConfig {
            default_stream_config: StreamConfigSpec {
                timestamping_mode: Some(TimestampingMode::Arrival),
                timestamping_uncapped: Some(true),
                ..Default::default()
            },
            ..Default::default()
        };
        b.reconfigure(&BasinReconfiguration {
            default_stream_config: Patch::Set(StreamReconfiguration {
                timestamping_mode: Patch::Set(TimestampingMode::ClientPrefer),
                ..Default::default()
            }),
            create_stream_on_append: Some(true),
            ..Default::default()
        });
        assert_eq!(
            b.default_stream_config.timestamping_mode,
            Some(TimestampingMode::ClientPrefer)
        );
        assert_eq!(b.default_stream_config.timestamping_uncapped, Some(true));
        assert!(b.create_stream_on_append);
        b.reconfigure(&BasinReconfiguration {
            default_stream_config: Patch::Clear,
            ..Default::default()
        });
        assert!(b.default_stream_config.is_empty());
    }
}
