//! Reads: unary (JSON or protobuf), server-sent events, and S2S read sessions. All three
//! open the same engine session; they differ in how they stop and how they frame output.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::{select, Either};
use futures::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use sluice_shards::metrics::{ReadKind, SessionKind};
use sluice_shards::names::BasinName;
use sluice_shards::records::{ReadBatch, BATCH_METERED_BYTES_MAX, BATCH_RECORDS_MAX};
use sluice_shards::streamer::{
    AutoCreate, ReadItem, ReadLimits, ReadRequest, ReadSession, ReadStart,
};
use sluice_shards::{EngineError, Shard};

use super::{encryption_key, format, stream_config_header, streaming};
use crate::api::access::Access;
use crate::api::streams::target;
use crate::api::{headers, ApiError, ApiResult, Body};
use crate::wire::coding::Coding;
use crate::wire::json::{self, Format};
use crate::wire::s2s;
use crate::wire::{proto, sse};
use sluice_shards::tokens::Operation;

/// Unary reads wait at most this long for new records.
const UNARY_WAIT_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
pub struct ReadQuery {
    seq_num: Option<u64>,
    timestamp: Option<u64>,
    tail_offset: Option<u64>,
    #[serde(default)]
    clamp: bool,
    count: Option<u64>,
    bytes: Option<u64>,
    until: Option<u64>,
    wait: Option<u32>,
}

impl ReadQuery {
    pub fn start(&self) -> ApiResult<ReadStart> {
        match (self.seq_num, self.timestamp, self.tail_offset) {
            (Some(n), None, None) => Ok(ReadStart::SeqNum(n)),
            (None, Some(t), None) => Ok(ReadStart::Timestamp(t)),
            (None, None, Some(k)) => Ok(ReadStart::TailOffset(k)),
            (None, None, None) => Ok(ReadStart::TailOffset(0)),
            _ => Err(ApiError::Invalid(
                "only one of seq_num, timestamp, or tail_offset can be provided".to_owned(),
            )),
        }
    }
}

enum Mode {
    Unary { protobuf: bool },
    Sse,
    S2s,
}

pub async fn read(
    shard: &Rc<Shard>,
    access: &Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(access, Operation::Read, raw, &req)?;
    let query: ReadQuery = crate::api::query(req.uri().query())?;
    let headers = req.headers();
    let mode = if headers::is_s2s(headers) {
        Mode::S2s
    } else if headers::accepts_event_stream(headers) {
        Mode::Sse
    } else {
        Mode::Unary {
            protobuf: headers::accepts_protobuf(headers),
        }
    };
    let format = format(headers)?;
    let resume = match (&mode, headers::text(headers, "last-event-id")?) {
        (Mode::Sse, Some(v)) => Some(
            sse::LastEventId::parse(v).map_err(|e| ApiError::invalid_header("last-event-id", e))?,
        ),
        _ => None,
    };
    let key = encryption_key(headers)?;
    let auto = AutoCreate::OnRead(stream_config_header(headers)?);

    let mut start = query.start()?;
    if let (ReadStart::Timestamp(t), Some(until)) = (start, query.until) {
        if until <= t {
            return Err(ApiError::Invalid(
                "start `timestamp` exceeds or equal to `until`".to_owned(),
            ));
        }
    }
    let mut limits = ReadLimits {
        count: query.count,
        bytes: query.bytes,
        until: query.until,
    };
    let mut wait = query.wait.map(|w| Duration::from_secs(u64::from(w)));
    if let Some(id) = &resume {
        start = ReadStart::SeqNum(id.seq_num.saturating_add(1));
        limits.count = limits.count.map(|c| c.saturating_sub(id.count));
        limits.bytes = limits.bytes.map(|b| b.saturating_sub(id.bytes));
    }
    if let Mode::Unary { .. } = mode {
        limits.count = Some(limits.count.map_or(BATCH_RECORDS_MAX as u64, |c| {
            c.min(BATCH_RECORDS_MAX as u64)
        }));
        limits.bytes = Some(limits.bytes.map_or(BATCH_METERED_BYTES_MAX as u64, |b| {
            b.min(BATCH_METERED_BYTES_MAX as u64)
        }));
        wait = wait.map(|w| w.min(UNARY_WAIT_MAX));
    }
    let request = ReadRequest {
        start,
        clamp: query.clamp,
        limits,
        wait,
        key,
    };
    let mut session = shard.read(basin.clone(), stream, request, auto).await?;
    Ok(match mode {
        Mode::Unary { protobuf } => {
            unary(shard, &basin, session, protobuf, format, req.headers()).await?
        }
        Mode::Sse => {
            let first = first_item(&mut session).await?;
            let (out, resp) = streaming("text/event-stream");
            let ids = resume.unwrap_or_default();
            let sse = run_sse(shard.clone(), basin, first, session, out, format, ids);
            glommio::spawn_local(sse).detach();
            resp
        }
        Mode::S2s => {
            let first = first_item(&mut session).await?;
            let compression = Coding::accepted(req.headers());
            let (out, resp) = streaming("s2s/proto");
            let s2s = run_s2s(shard.clone(), basin, first, session, out, compression);
            glommio::spawn_local(s2s).detach();
            resp
        }
    })
}

/// Collect one response: what catch-up finds up to the tail, or, when it finds nothing
/// and the read may wait, the first live batch.
async fn unary(
    shard: &Shard,
    basin: &BasinName,
    mut session: ReadSession,
    protobuf: bool,
    format: Format,
    request_headers: &HeaderMap,
) -> ApiResult<Response<Body>> {
    let mut batch = ReadBatch::default();
    while let Some(item) = session.items.next().await {
        match item {
            ReadItem::Batch(b) => {
                let live = b.tail.is_some();
                batch.records.extend(b.records);
                if live {
                    batch.tail = b.tail;
                    break;
                }
            }
            ReadItem::Heartbeat(_) if !batch.records.is_empty() => break,
            ReadItem::Heartbeat(_) => {}
            ReadItem::Error(e) => return Err(e.into()),
        }
    }
    let bytes = metered_bytes(&batch);
    shard
        .metrics()
        .read(ReadKind::Unary, batch.records.len() as u64, bytes);
    shard.count_read(basin, bytes);
    if protobuf {
        let mut resp = Response::new(crate::api::full(proto::encode_read_batch(&batch)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/protobuf"),
        );
        return Ok(resp);
    }
    Ok(crate::api::json(
        request_headers,
        StatusCode::OK,
        &json::read_batch_json(&batch, format),
        None,
    ))
}

/// The session's first item, so that an error it starts with (a wrong key on the first
/// record, say) is a plain HTTP error rather than an event inside a 200 response.
async fn first_item(session: &mut ReadSession) -> ApiResult<Option<ReadItem>> {
    match session.items.next().await {
        Some(ReadItem::Error(e)) => Err(e.into()),
        other => Ok(other),
    }
}

async fn run_sse(
    shard: Rc<Shard>,
    basin: BasinName,
    first: Option<ReadItem>,
    mut session: ReadSession,
    mut out: mpsc::Sender<Bytes>,
    format: Format,
    mut id: sse::LastEventId,
) {
    let _open = shard.metrics().session(SessionKind::ReadSse);
    let mut first = first;
    let mut drained = Box::pin(shard.drained());
    while let Some(item) = match first.take() {
        Some(item) => Some(item),
        None => next_or_drained(&mut session, &mut drained).await,
    } {
        let event = match item {
            ReadItem::Batch(batch) => {
                let Some(last) = batch.records.last() else {
                    continue;
                };
                let (records, bytes) = (batch.records.len() as u64, metered_bytes(&batch));
                shard.metrics().read(ReadKind::Sse, records, bytes);
                shard.count_read(&basin, bytes);
                id.seq_num = last.seq_num;
                id.count = id.count.saturating_add(records);
                id.bytes = id.bytes.saturating_add(bytes);
                sse::batch_event(&id, &json::read_batch_json(&batch, format).to_string())
            }
            ReadItem::Heartbeat(tail) => {
                sse::ping_event(sluice_shards::clock::Clock::system().now_millis(), tail)
            }
            ReadItem::Error(e) => {
                let (_, body) = ApiError::from(e).status_and_body();
                let _ = out.send(sse::error_event(&body)).await;
                return;
            }
        };
        if out.send(event).await.is_err() {
            return;
        }
    }
    let _ = out.send(sse::done_event()).await;
}

async fn run_s2s(
    shard: Rc<Shard>,
    basin: BasinName,
    first: Option<ReadItem>,
    mut session: ReadSession,
    mut out: mpsc::Sender<Bytes>,
    compression: Coding,
) {
    let _open = shard.metrics().session(SessionKind::ReadS2s);
    let mut first = first;
    let mut drained = Box::pin(shard.drained());
    while let Some(item) = match first.take() {
        Some(item) => Some(item),
        None => next_or_drained(&mut session, &mut drained).await,
    } {
        let frame = match item {
            ReadItem::Batch(batch) => {
                if !batch.records.is_empty() {
                    let (records, bytes) = (batch.records.len() as u64, metered_bytes(&batch));
                    shard.metrics().read(ReadKind::S2s, records, bytes);
                    shard.count_read(&basin, bytes);
                }
                s2s::encode_proto(&proto::read_batch_to_proto(&batch), compression)
            }
            ReadItem::Heartbeat(tail) => s2s::encode_proto(
                &proto::read_batch_to_proto(&ReadBatch {
                    records: Vec::new(),
                    tail: Some(tail),
                }),
                compression,
            ),
            ReadItem::Error(e) => {
                let (status, body) = ApiError::from(e).status_and_body();
                let _ = out.send(s2s::encode_terminal(status.as_u16(), &body)).await;
                return;
            }
        };
        if out.send(frame).await.is_err() {
            return;
        }
    }
}

fn metered_bytes(batch: &ReadBatch) -> u64 {
    batch.records.iter().map(|r| r.metered_bytes() as u64).sum()
}

/// The session's next item, or a draining error once the server starts shutting down, so
/// that the client ends cleanly and reconnects elsewhere.
async fn next_or_drained(
    session: &mut ReadSession,
    drained: &mut Pin<Box<impl Future<Output = ()>>>,
) -> Option<ReadItem> {
    match select(session.items.next(), drained.as_mut()).await {
        Either::Left((item, _)) => item,
        Either::Right(((), _)) => Some(ReadItem::Error(EngineError::Draining)),
    }
}
