//! The encoder: the only way a model file is written (feature `alloc`).

use alloc::vec::Vec;

use super::{Header, Layer, ModelMeta};
use crate::{Error, Model};

/// Encodes `meta` and `layers` into a complete model file (header + postcard body).
///
/// The result is decoded again before it is returned, so the encoder never hands out a file that
/// [`Model::decode`] would refuse; that decode error is returned as is (it names the layer).
pub fn encode_model<S: AsRef<[u8]>>(
    meta: &ModelMeta,
    layers: &[Layer<S>],
) -> Result<Vec<u8>, Error> {
    let mut body = postcard::to_allocvec(meta).map_err(|_| Error::EncodeInvalid)?;
    // A slice serialises as a postcard sequence: varint count, then the layers. The decoder reads
    // the same bytes one layer at a time.
    let seq = postcard::to_allocvec(layers).map_err(|_| Error::EncodeInvalid)?;
    body.extend_from_slice(&seq);
    let header = Header::for_body(&body)?;
    let mut out = Vec::with_capacity(super::HEADER_LEN + body.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&body);
    Model::decode(&out)?;
    Ok(out)
}
