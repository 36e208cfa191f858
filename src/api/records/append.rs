//! Appends: unary (JSON or protobuf in; JSON or protobuf ack out) and S2S append sessions.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::{SinkExt, StreamExt};
use glommio::sync::{Semaphore, StaticPermit};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sluice_shards::metrics::{AppendKind, SessionKind};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::AppendBatch;
use sluice_shards::streamer::{AppendSession, AutoCreate, PendingAck};
use sluice_shards::{EngineError, Shard};

use super::{encryption_key, format, stream_config_header, streaming};
use crate::api::access::Access;
use crate::api::streams::target;
use crate::api::{body, headers, ApiError, ApiResult, Body};
use crate::wire::coding::Coding;
use crate::wire::json::{self, JsonError};
use crate::wire::proto::{self, ProtoError};
use crate::wire::s2s::{self, Frame, FrameDecoder};
use sluice_shards::tokens::Operation;

/// Largest unary append body. A 1 MiB metered batch can take several times that as JSON.
const APPEND_BODY_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Appends one S2S session may have awaiting acknowledgement before it reads more input.
const SESSION_INFLIGHT_MAX: usize = 256;
/// How long a session that has ended keeps reading (and dropping) what its client sends.
const SESSION_DISCARD_MAX: Duration = Duration::from_secs(5);

impl From<JsonError> for ApiError {
    fn from(e: JsonError) -> ApiError {
        match e {
            JsonError::BadJson(m) => ApiError::BadJson(m),
            JsonError::Invalid(m) => ApiError::Invalid(m),
        }
    }
}

impl From<ProtoError> for ApiError {
    fn from(e: ProtoError) -> ApiError {
        match e {
            ProtoError::BadProto(m) => ApiError::BadProto(m),
            ProtoError::Invalid(m) => ApiError::Invalid(m),
        }
    }
}

pub async fn append(
    shard: &Rc<Shard>,
    access: &Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(access, Operation::Append, raw, &req)?;
    if headers::is_s2s(req.headers()) {
        return session(shard, access, basin, stream, req).await;
    }
    let (parts, incoming) = req.into_parts();
    let key = encryption_key(&parts.headers)?;
    let auto = AutoCreate::OnAppend(stream_config_header(&parts.headers)?);
    let batch = if headers::content_is_protobuf(&parts.headers) {
        let bytes = body::read(&parts.headers, incoming, APPEND_BODY_MAX_BYTES).await?;
        proto::append_input_to_batch(proto::decode_append_input(bytes)?)?
    } else {
        let format = format(&parts.headers)?;
        if headers::content_is_json(&parts.headers) != Some(true) {
            return Err(ApiError::json_content_type_required());
        }
        let bytes = body::read(&parts.headers, incoming, APPEND_BODY_MAX_BYTES).await?;
        json::parse_append_input(&bytes, format)?
    };
    access.commands(&batch)?;
    let (arrived, bytes) = (Instant::now(), batch.metered_bytes() as u64);
    let ack = shard
        .append(basin.clone(), stream, batch, key, auto)
        .await?
        .wait()
        .await?;
    shard.metrics().appended(
        AppendKind::Unary,
        ack.end.seq_num - ack.start.seq_num,
        bytes,
        arrived.elapsed(),
    );
    shard.count_append(&basin, bytes);
    if headers::accepts_protobuf(&parts.headers) {
        let mut resp = Response::new(crate::api::full(proto::encode_append_ack(&ack)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/protobuf"),
        );
        return Ok(resp);
    }
    Ok(crate::api::json(
        &parts.headers,
        StatusCode::OK,
        &json::append_ack_json(&ack),
        None,
    ))
}

/// One slot of a session's ordered ack queue.
enum Slot {
    /// An append awaiting its ack; its place among the session's unacknowledged inputs is
    /// given back once the ack arrives.
    Pending(PendingAck, Input),
    Failed(ApiError),
}

/// What a session keeps of one input until its ack goes out.
struct Input {
    /// Its place among the session's unacknowledged inputs.
    _place: StaticPermit,
    arrived: Instant,
    metered_bytes: u64,
}

/// An S2S append session: inputs are sequenced as they arrive, acks go out in input order
/// once durable, and the first failure ends the session with a terminal frame after the
/// acks that precede it.
async fn session(
    shard: &Rc<Shard>,
    access: &Access,
    basin: BasinName,
    stream: StreamName,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let spec = stream_config_header(req.headers())?;
    let key = encryption_key(req.headers())?;
    let compression = Coding::accepted(req.headers());
    // Errors about the stream itself are plain HTTP errors, before any frame.
    let appends = shard
        .prepare_append(basin.clone(), stream, key, AutoCreate::OnAppend(spec))
        .await?;
    let (out, resp) = streaming("s2s/proto");
    let (slots_tx, slots) = mpsc::channel(SESSION_INFLIGHT_MAX);
    // Dropped when the acks end (a failure, or the client gone): input stops at once.
    let (acks_running, acks_ended) = oneshot::channel::<()>();
    let inputs = read_inputs(
        shard.clone(),
        access.clone(),
        appends,
        req.into_body(),
        slots_tx,
        acks_ended,
    );
    glommio::spawn_local(async move {
        if let Some(body) = inputs.await {
            discard_rest(body).await;
        }
    })
    .detach();
    glommio::spawn_local(write_acks(
        shard.clone(),
        basin,
        slots,
        out,
        compression,
        acks_running,
    ))
    .detach();
    Ok(resp)
}

/// Inputs decoded but not yet sent to the owner.
type Trip = Vec<(AppendBatch, Input)>;

/// Decode the session's inputs and submit them, until the body ends, an input fails or
/// is refused, the acks end (`acks_ended`) or the server drains. Returns the body if the
/// session ended before it did.
async fn read_inputs(
    shard: Rc<Shard>,
    access: Access,
    appends: AppendSession,
    mut body: Incoming,
    mut slots: mpsc::Sender<Slot>,
    mut acks_ended: oneshot::Receiver<()>,
) -> Option<Incoming> {
    let places = Rc::new(Semaphore::new(SESSION_INFLIGHT_MAX as u64));
    let mut decoder = FrameDecoder::new();
    let mut trip = Trip::new();
    let mut drained = Box::pin(shard.drained());
    loop {
        let stop = select(drained.as_mut(), &mut acks_ended);
        let frame = match select(body.frame(), stop).await {
            Either::Left((frame, _)) => frame,
            // Shutting down: take no more input; what is in flight is still acknowledged,
            // then the session ends with a draining error the client reconnects on.
            Either::Right((Either::Left(((), _)), _)) => {
                let _ = slots
                    .send(Slot::Failed(ApiError::Engine(EngineError::Draining)))
                    .await;
                return Some(body);
            }
            // The session has ended with a failure, or the client is gone.
            Either::Right((Either::Right(_), _)) => return Some(body),
        };
        let chunk = match frame {
            None => break,
            Some(Err(_)) => return None,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        decoder.push(&chunk);
        // Every input this chunk completes goes to the owner in one trip, unless the
        // session runs out of places first.
        let mut bad_input = None;
        loop {
            let batch = match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Message(payload))) => match decode_input(payload)
                    .and_then(|batch| access.commands(&batch).map(|()| batch))
                {
                    Ok(batch) => batch,
                    Err(e) => {
                        bad_input = Some(e);
                        break;
                    }
                },
                Ok(Some(Frame::Terminal { .. })) => {
                    bad_input = Some(ApiError::BadFrame(
                        "unexpected terminal frame from the client".to_owned(),
                    ));
                    break;
                }
                Err(e) => {
                    bad_input = Some(ApiError::BadFrame(e.to_string()));
                    break;
                }
            };
            let place = match places.try_acquire_static_permit(1) {
                Ok(place) => place,
                Err(_) => {
                    if !send_trip(&shard, &appends, &mut trip, &mut slots).await {
                        return Some(body);
                    }
                    match places.acquire_static_permit(1).await {
                        Ok(place) => place,
                        Err(_) => return Some(body),
                    }
                }
            };
            let input = Input {
                _place: place,
                arrived: Instant::now(),
                metered_bytes: batch.metered_bytes() as u64,
            };
            trip.push((batch, input));
        }
        if !send_trip(&shard, &appends, &mut trip, &mut slots).await {
            return Some(body);
        }
        if let Some(e) = bad_input {
            let _ = slots.send(Slot::Failed(e)).await;
            return Some(body);
        }
    }
    if let Err(e) = decoder.finish() {
        let _ = slots
            .send(Slot::Failed(ApiError::BadFrame(e.to_string())))
            .await;
    }
    None
}

/// Read and drop what the client still sends after its session ended, for at most
/// [`SESSION_DISCARD_MAX`]: a client still writing inputs when the terminal frame comes
/// then reads that frame, rather than a stream reset under its writes.
async fn discard_rest(mut body: Incoming) {
    let discarding = async { while let Some(Ok(_)) = body.frame().await {} };
    let bound = glommio::timer::sleep(SESSION_DISCARD_MAX);
    futures::pin_mut!(discarding, bound);
    select(discarding, bound).await;
}

/// Append the trip's inputs in order with one trip to the owner and queue their acks.
/// Returns whether the session goes on.
async fn send_trip(
    shard: &Rc<Shard>,
    appends: &AppendSession,
    trip: &mut Trip,
    slots: &mut mpsc::Sender<Slot>,
) -> bool {
    if trip.is_empty() {
        return true;
    }
    if appends.has_failed() {
        // Known here already: save the trip. The owner would refuse these anyway.
        return false;
    }
    let (batches, inputs): (Vec<_>, Vec<_>) = std::mem::take(trip).into_iter().unzip();
    let results = shard
        .append_in_order(appends, batches, AutoCreate::No)
        .await;
    for (result, input) in results.into_iter().zip(inputs) {
        let slot = match result {
            Ok(pending) => Slot::Pending(pending, input),
            Err(e) => Slot::Failed(e.into()),
        };
        let failed = match &slot {
            Slot::Failed(_) => true,
            Slot::Pending(pending, _) => pending.is_rejected(),
        };
        if slots.send(slot).await.is_err() || failed {
            return false;
        }
    }
    true
}

fn decode_input(payload: Bytes) -> ApiResult<AppendBatch> {
    let input = proto::decode_append_input(payload)
        .map_err(|e| ApiError::BadFrame(format!("invalid AppendInput: {e}")))?;
    Ok(proto::append_input_to_batch(input)?)
}

async fn write_acks(
    shard: Rc<Shard>,
    basin: BasinName,
    mut slots: mpsc::Receiver<Slot>,
    mut out: mpsc::Sender<Bytes>,
    compression: Coding,
    _running: oneshot::Sender<()>,
) {
    let _open = shard.metrics().session(SessionKind::AppendS2s);
    while let Some(slot) = slots.next().await {
        let result = match slot {
            Slot::Pending(pending, input) => {
                pending.wait().await.map_err(ApiError::from).inspect(|ack| {
                    shard.metrics().appended(
                        AppendKind::S2s,
                        ack.end.seq_num - ack.start.seq_num,
                        input.metered_bytes,
                        input.arrived.elapsed(),
                    );
                    shard.count_append(&basin, input.metered_bytes);
                })
            }
            Slot::Failed(e) => Err(e),
        };
        let frame = match result {
            Ok(ack) => s2s::encode_proto(&proto::append_ack_to_proto(&ack), compression),
            Err(e) => {
                let (status, body) = e.status_and_body();
                let _ = out.send(s2s::encode_terminal(status.as_u16(), &body)).await;
                return;
            }
        };
        if out.send(frame).await.is_err() {
            return;
        }
    }
}
