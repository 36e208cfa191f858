//! Records as the engine sees them: what an append carries, what a read returns, and the
//! stream positions in between. Validated by the API layer before they get here.

use bytes::Bytes;

/// Largest metered size of one record, and of one append batch (SEMANTICS §2).
pub const RECORD_METERED_BYTES_MAX: usize = 1024 * 1024;
pub const BATCH_METERED_BYTES_MAX: usize = 1024 * 1024;
/// Most records in one append batch, and in one read batch.
pub const BATCH_RECORDS_MAX: usize = 1000;
/// Longest fencing token, in bytes.
pub const FENCING_TOKEN_MAX_BYTES: usize = 36;

/// A position in a stream: a sequence number and the timestamp that goes with it. As a
/// tail, `seq_num` is the next to be assigned and `timestamp` that of the last record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub seq_num: u64,
    pub timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Bytes,
    pub value: Bytes,
}

/// The operation of a command record: a record whose only header has an empty name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Set the fencing token (empty resets it).
    Fence(FencingToken),
    /// Trim every record below this sequence number.
    Trim(u64),
}

/// A fencing token: UTF-8, at most 36 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FencingToken(String);

impl FencingToken {
    pub fn new(token: String) -> Result<FencingToken, String> {
        if token.len() > FENCING_TOKEN_MAX_BYTES {
            return Err(format!(
                "fencing token must not exceed {FENCING_TOKEN_MAX_BYTES} bytes in length"
            ));
        }
        Ok(FencingToken(token))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One record of an append, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRecord {
    pub timestamp: Option<u64>,
    pub headers: Vec<Header>,
    pub body: Bytes,
}

impl AppendRecord {
    /// `8 + 2·headers + Σ(name + value) + body` bytes.
    pub fn metered_bytes(&self) -> usize {
        metered_bytes(&self.headers, &self.body)
    }

    /// The command this record carries, if it is a command record. Its validity was
    /// checked when the batch was built.
    pub fn command(&self) -> Option<Command> {
        match self.headers.as_slice() {
            [h] if h.name.is_empty() => match &h.value[..] {
                b"fence" => std::str::from_utf8(&self.body)
                    .ok()
                    .and_then(|t| FencingToken::new(t.to_owned()).ok())
                    .map(Command::Fence),
                b"trim" => <[u8; 8]>::try_from(&self.body[..])
                    .ok()
                    .map(|b| Command::Trim(u64::from_be_bytes(b))),
                _ => None,
            },
            _ => None,
        }
    }
}

pub fn metered_bytes(headers: &[Header], body: &[u8]) -> usize {
    8 + 2 * headers.len()
        + headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
        + body.len()
}

/// A validated append: 1..=1000 records within 1 MiB metered, valid commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendBatch {
    records: Vec<AppendRecord>,
    metered_bytes: usize,
    pub match_seq_num: Option<u64>,
    pub fencing_token: Option<FencingToken>,
}

/// Why a batch was rejected; the text is what clients see (422 `invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(pub String);

impl AppendBatch {
    pub fn new(
        records: Vec<AppendRecord>,
        match_seq_num: Option<u64>,
        fencing_token: Option<FencingToken>,
    ) -> Result<AppendBatch, BatchError> {
        let err = |m: String| Err(BatchError(m));
        if records.is_empty() {
            return err("record batch must not be empty".into());
        }
        if records.len() > BATCH_RECORDS_MAX {
            return err("record batch must not exceed 1000 records".into());
        }
        let mut metered = 0;
        for record in &records {
            let size = record.metered_bytes();
            if size > RECORD_METERED_BYTES_MAX {
                return err("record must have metered size less than 1 MiB".into());
            }
            metered += size;
            validate_headers(record)?;
        }
        if metered > BATCH_METERED_BYTES_MAX {
            return err("record batch must not exceed a metered size of 1 MiB".into());
        }
        Ok(AppendBatch {
            records,
            metered_bytes: metered,
            match_seq_num,
            fencing_token,
        })
    }

    pub fn records(&self) -> &[AppendRecord] {
        &self.records
    }

    pub fn into_records(self) -> Vec<AppendRecord> {
        self.records
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn metered_bytes(&self) -> usize {
        self.metered_bytes
    }
}

fn validate_headers(record: &AppendRecord) -> Result<(), BatchError> {
    match record.headers.as_slice() {
        [h] if h.name.is_empty() => match &h.value[..] {
            b"fence" => {
                let token = std::str::from_utf8(&record.body).map_err(|_| {
                    BatchError("invalid `fence` command: invalid UTF-8".into())
                })?;
                FencingToken::new(token.to_owned())
                    .map(|_| ())
                    .map_err(|e| BatchError(format!("invalid `fence` command: {e}")))
            }
            b"trim" if record.body.len() == 8 => Ok(()),
            b"trim" => Err(BatchError(format!(
                "invalid `trim` command: earliest sequence number to trim to was {} bytes, must be 8",
                record.body.len()
            ))),
            _ => Err(BatchError("unknown command".into())),
        },
        headers if headers.iter().any(|h| h.name.is_empty()) => {
            Err(BatchError("invalid header: empty name".into()))
        }
        _ => Ok(()),
    }
}

/// A record as stored and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencedRecord {
    pub seq_num: u64,
    pub timestamp: u64,
    pub headers: Vec<Header>,
    pub body: Bytes,
}

impl SequencedRecord {
    pub fn metered_bytes(&self) -> usize {
        metered_bytes(&self.headers, &self.body)
    }
}

/// A batch of records delivered to a reader. `tail` is set only on batches delivered while
/// following live appends (and on heartbeats, which have no records).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<SequencedRecord>,
    pub tail: Option<Position>,
}

/// The result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    pub start: Position,
    pub end: Position,
    pub tail: Position,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(headers: &[(&str, &str)], body: &[u8]) -> AppendRecord {
        AppendRecord {
            timestamp: None,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: Bytes::copy_from_slice(n.as_bytes()),
                    value: Bytes::copy_from_slice(v.as_bytes()),
                })
                .collect(),
            body: Bytes::copy_from_slice(body),
        }
    }

    fn batch_err(records: Vec<AppendRecord>) -> String {
        AppendBatch::new(records, None, None).unwrap_err().0
    }

    #[test]
    fn metered_size_formula() {
        assert_eq!(rec(&[], b"").metered_bytes(), 8);
        assert_eq!(rec(&[("ab", "cde")], b"xyz").metered_bytes(), 8 + 2 + 5 + 3);
    }

    #[test]
    fn batch_limits() {
        assert!(batch_err(vec![]).contains("must not be empty"));
        assert!(AppendBatch::new(vec![rec(&[], b""); 1000], None, None).is_ok());
        assert!(batch_err(vec![rec(&[], b""); 1001]).contains("1000 records"));
        let exactly = rec(&[], &vec![0u8; RECORD_METERED_BYTES_MAX - 8]);
        assert!(AppendBatch::new(vec![exactly.clone()], None, None).is_ok());
        let over = rec(&[], &vec![0u8; RECORD_METERED_BYTES_MAX - 7]);
        assert!(batch_err(vec![over]).contains("less than 1 MiB"));
        let half = rec(&[], &vec![0u8; RECORD_METERED_BYTES_MAX / 2]);
        assert!(batch_err(vec![half.clone(), half]).contains("metered size of 1 MiB"));
    }

    #[test]
    fn commands() {
        assert!(batch_err(vec![rec(&[("", "bogus")], b"")]).contains("unknown command"));
        assert!(batch_err(vec![rec(&[("", "x"), ("a", "b")], b"")]).contains("empty name"));
        assert!(batch_err(vec![rec(&[("", "trim")], b"1234567")]).contains("was 7 bytes"));
        assert!(batch_err(vec![rec(&[("", "fence")], &[b'a'; 37])]).contains("36 bytes"));
        assert!(batch_err(vec![rec(&[("", "fence")], &[0xff])]).contains("invalid UTF-8"));
        let fence = rec(&[("", "fence")], &[b'a'; 36]);
        assert_eq!(
            fence.command(),
            Some(Command::Fence(FencingToken::new("a".repeat(36)).unwrap()))
        );
        let trim = rec(&[("", "trim")], &7u64.to_be_bytes());
        assert_eq!(trim.command(), Some(Command::Trim(7)));
        assert_eq!(rec(&[("k", "fence")], b"").command(), None);
    }
}
