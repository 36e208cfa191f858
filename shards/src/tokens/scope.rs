//! What an access token may do: operations, by name or by group, on sets of basins, streams
//! and token ids. The serde forms are the API's JSON and also what is persisted.

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize};

/// Every operation a token can be granted. Persisted by name: never rename.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Operation {
    ListBasins,
    CreateBasin,
    DeleteBasin,
    ReconfigureBasin,
    GetBasinConfig,
    IssueAccessToken,
    RevokeAccessToken,
    ListAccessTokens,
    ListStreams,
    CreateStream,
    DeleteStream,
    GetStreamConfig,
    ReconfigureStream,
    CheckTail,
    Append,
    Read,
    Trim,
    Fence,
    AccountMetrics,
    BasinMetrics,
    StreamMetrics,
    ListLocations,
    GetDefaultLocation,
    SetDefaultLocation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpGroup {
    Account,
    Basin,
    Stream,
}

impl Operation {
    /// Every operation.
    pub fn all() -> impl Iterator<Item = Operation> {
        <Operation as strum::IntoEnumIterator>::iter()
    }

    /// The group the operation belongs to, and whether it writes.
    pub fn group(self) -> (OpGroup, bool) {
        use Operation::*;
        match self {
            ListBasins | ListAccessTokens | AccountMetrics | ListLocations | GetDefaultLocation => {
                (OpGroup::Account, false)
            }
            CreateBasin | DeleteBasin | ReconfigureBasin | IssueAccessToken | RevokeAccessToken
            | SetDefaultLocation => (OpGroup::Account, true),
            GetBasinConfig | ListStreams | BasinMetrics => (OpGroup::Basin, false),
            CreateStream | DeleteStream | ReconfigureStream => (OpGroup::Basin, true),
            GetStreamConfig | CheckTail | Read | StreamMetrics => (OpGroup::Stream, false),
            Append | Trim | Fence => (OpGroup::Stream, true),
        }
    }

    /// The operation's name, as in the API's JSON.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A set of resource names: one exact name, or every name with a prefix. `{"exact": ""}`
/// means no name at all and is kept as the absence of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceSet {
    Exact(String),
    Prefix(String),
}

impl ResourceSet {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            ResourceSet::Exact(exact) => exact == name,
            ResourceSet::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }

    /// Whether every name in `other` is in this set.
    fn covers(&self, other: &ResourceSet) -> bool {
        match (self, other) {
            (ResourceSet::Exact(a), ResourceSet::Exact(b)) => a == b,
            (ResourceSet::Exact(_), ResourceSet::Prefix(_)) => false,
            (ResourceSet::Prefix(p), ResourceSet::Exact(b) | ResourceSet::Prefix(b)) => {
                b.starts_with(p.as_str())
            }
        }
    }

    /// Whether any name starting with `prefix` could be in the set: lists skip the scan
    /// when none could.
    pub fn may_match_prefix(&self, prefix: &str) -> bool {
        match self {
            ResourceSet::Exact(exact) => exact.starts_with(prefix),
            ResourceSet::Prefix(p) => p.starts_with(prefix) || prefix.starts_with(p.as_str()),
        }
    }
}

/// `None` is the empty set; `Some` is checked by [`ResourceSet::matches`].
pub fn set_matches(set: &Option<ResourceSet>, name: &str) -> bool {
    set.as_ref().is_some_and(|s| s.matches(name))
}

fn set_covers(outer: &Option<ResourceSet>, inner: &Option<ResourceSet>) -> bool {
    match (outer, inner) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(o), Some(i)) => o.covers(i),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadWrite {
    #[serde(default, deserialize_with = "null_default")]
    pub read: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub write: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpGroups {
    #[serde(default, deserialize_with = "null_default")]
    pub account: ReadWrite,
    #[serde(default, deserialize_with = "null_default")]
    pub basin: ReadWrite,
    #[serde(default, deserialize_with = "null_default")]
    pub stream: ReadWrite,
}

impl OpGroups {
    fn permits(&self, op: Operation) -> bool {
        let (group, writes) = op.group();
        let rw = match group {
            OpGroup::Account => self.account,
            OpGroup::Basin => self.basin,
            OpGroup::Stream => self.stream,
        };
        if writes {
            rw.write
        } else {
            rw.read
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default, deserialize_with = "resource_set")]
    pub basins: Option<ResourceSet>,
    #[serde(default, deserialize_with = "resource_set")]
    pub streams: Option<ResourceSet>,
    #[serde(default, deserialize_with = "resource_set")]
    pub access_tokens: Option<ResourceSet>,
    #[serde(default, deserialize_with = "null_default")]
    pub op_groups: OpGroups,
    #[serde(default, deserialize_with = "null_default")]
    pub ops: BTreeSet<Operation>,
}

impl Scope {
    /// Everything: what the root token may do.
    pub fn everything() -> Scope {
        let all = ReadWrite {
            read: true,
            write: true,
        };
        let any = || Some(ResourceSet::Prefix(String::new()));
        Scope {
            basins: any(),
            streams: any(),
            access_tokens: any(),
            op_groups: OpGroups {
                account: all,
                basin: all,
                stream: all,
            },
            ops: BTreeSet::new(),
        }
    }

    pub fn permits(&self, op: Operation) -> bool {
        self.ops.contains(&op) || self.op_groups.permits(op)
    }

    pub fn permits_nothing(&self) -> bool {
        !Operation::all().any(|op| self.permits(op))
    }

    /// Whether a token with this scope may hand out `other`: nothing it could do that
    /// this scope cannot.
    pub fn covers(&self, other: &Scope) -> bool {
        Operation::all().all(|op| !other.permits(op) || self.permits(op))
            && set_covers(&self.basins, &other.basins)
            && set_covers(&self.streams, &other.streams)
            && set_covers(&self.access_tokens, &other.access_tokens)
    }
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A resource set, with `null` and `{"exact": ""}` both meaning none.
fn resource_set<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ResourceSet>, D::Error> {
    Ok(match Option::<ResourceSet>::deserialize(d)? {
        Some(ResourceSet::Exact(name)) if name.is_empty() => None,
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_their_json_names() {
        for op in Operation::all() {
            assert_eq!(serde_json::to_value(op).unwrap(), op.as_str());
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
        }
        assert_eq!(Operation::all().count(), 24);
    }

    fn prefix(p: &str) -> Option<ResourceSet> {
        Some(ResourceSet::Prefix(p.to_owned()))
    }

    fn exact(e: &str) -> Option<ResourceSet> {
        Some(ResourceSet::Exact(e.to_owned()))
    }

    #[test]
    fn groups_and_ops_are_a_union() {
        let scope: Scope = serde_json::from_str(
            r#"{"op_groups": {"stream": {"read": true}}, "ops": ["append"], "basins": null}"#,
        )
        .unwrap();
        assert!(scope.permits(Operation::Read));
        assert!(scope.permits(Operation::CheckTail));
        assert!(scope.permits(Operation::Append));
        assert!(!scope.permits(Operation::Trim));
        assert!(!scope.permits(Operation::ListStreams));
        assert_eq!(scope.basins, None);
    }

    #[test]
    fn an_empty_exact_set_is_no_set() {
        let scope: Scope = serde_json::from_str(r#"{"streams": {"exact": ""}}"#).unwrap();
        assert_eq!(scope.streams, None);
        assert!(scope.permits_nothing());
        let all: Scope = serde_json::from_str(r#"{"streams": {"prefix": ""}}"#).unwrap();
        assert!(set_matches(&all.streams, "anything"));
    }

    #[test]
    fn covering_needs_every_op_and_every_name() {
        let mut outer = Scope::everything();
        outer.basins = prefix("team-");
        let mut inner = outer.clone();
        assert!(outer.covers(&inner));
        inner.basins = exact("team-a");
        assert!(outer.covers(&inner));
        inner.basins = prefix("team");
        assert!(!outer.covers(&inner));
        inner.basins = prefix("team-a-");
        outer.op_groups.account.write = false;
        assert!(!outer.covers(&inner), "inner may write at account level");
        inner.op_groups.account.write = false;
        assert!(outer.covers(&inner));
        inner.ops.insert(Operation::CreateBasin);
        assert!(!outer.covers(&inner), "an op outside the groups");
        let nothing = Scope::default();
        assert!(nothing.covers(&Scope::default()));
        assert!(!nothing.covers(&Scope::everything()));
    }

    #[test]
    fn prefix_probe() {
        assert!(ResourceSet::Prefix("ab".into()).may_match_prefix("a"));
        assert!(ResourceSet::Prefix("ab".into()).may_match_prefix("abc"));
        assert!(!ResourceSet::Prefix("ab".into()).may_match_prefix("b"));
        assert!(ResourceSet::Exact("abc".into()).may_match_prefix("ab"));
        assert!(!ResourceSet::Exact("abc".into()).may_match_prefix("abd"));
    }
}
