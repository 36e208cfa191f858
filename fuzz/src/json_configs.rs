//! JSON bodies of the control plane: basin and stream configs, their reconfigurations and
//! the create requests, parsed and validated as the API does; never a panic, and memory in
//! proportion to the input.

use sluice::api::inputs::{
    parse, BasinConfigJson, BasinReconfigurationJson, CreateBasinRequest, CreateStreamRequest,
    EnsureBasinRequest, StreamConfigJson, StreamReconfigurationJson,
};

use crate::alloc_meter::bounded;

pub fn run(data: &[u8]) {
    let bound = 64 * data.len() + (64 << 10);
    bounded("parsing config bodies", bound, || {
        let _ = parse::<StreamConfigJson>(data).and_then(StreamConfigJson::validate);
        let _ = parse::<BasinConfigJson>(data).and_then(BasinConfigJson::validate);
        let _ =
            parse::<StreamReconfigurationJson>(data).and_then(StreamReconfigurationJson::validate);
        let _ =
            parse::<BasinReconfigurationJson>(data).and_then(BasinReconfigurationJson::validate);
        if let Ok(r) = parse::<CreateBasinRequest>(data) {
            let _ = r.config.unwrap_or_default().validate();
        }
        if let Ok(r) = parse::<EnsureBasinRequest>(data) {
            let _ = r.config.unwrap_or_default().validate();
        }
        if let Ok(r) = parse::<CreateStreamRequest>(data) {
            let _ = r.config.unwrap_or_default().validate();
        }
    });
}
