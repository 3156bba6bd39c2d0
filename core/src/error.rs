//! The one error type of `empf-core`: small, `Copy`, no heap, named by phase.

use core::fmt;

/// Everything that can go wrong in `empf-core`.
///
/// Variant names start with the phase that failed (`Decode…`, `Infer…`, `Encode…`, `Quant…`), so a
/// log line on a chip with no allocator still says where it failed. Layer-specific variants carry
/// the index of the offending layer in the model's layer list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the fixed-size header.
    DecodeTooShort,
    /// The first four bytes are not `EMPF`.
    DecodeBadMagic,
    /// The header's format version is not one this build reads.
    DecodeUnsupportedVersion {
        /// Version found in the header.
        found: u16,
    },
    /// Reserved header flag bits are set.
    DecodeBadFlags,
    /// The header's body length does not match the bytes that follow it.
    DecodeLengthMismatch,
    /// The body's CRC-32 does not match the header.
    DecodeBadCrc,
    /// The body is not valid postcard for the v1 schema (truncated, bad varint, bad enum tag, …).
    DecodeBody,
    /// Bytes remain after the last layer.
    DecodeTrailingBytes,
    /// `T`, the input shape or the class count is zero or out of range.
    DecodeBadMeta,
    /// The model has no layers, or more than [`crate::MAX_LAYERS`].
    DecodeLayerCount,
    /// A layer's parameters have the wrong length for its declared shape.
    DecodeParamLength {
        /// Index of the layer.
        layer: u16,
    },
    /// A layer's declared input does not match the shape it receives, or it would produce an
    /// empty or oversized output.
    DecodeShapeMismatch {
        /// Index of the layer.
        layer: u16,
    },
    /// A layer field is out of its allowed range (kernel, stride, padding, shift, slot, …).
    DecodeBadField {
        /// Index of the layer.
        layer: u16,
    },
    /// A residual `Add`/`Swap` names a slot that was never saved, or shapes differ.
    DecodeBadSlot {
        /// Index of the layer.
        layer: u16,
    },
    /// Some layers carry integer-path parameters and others do not.
    DecodeInconsistentFixed {
        /// Index of the layer.
        layer: u16,
    },
    /// The integer path of this layer could overflow its accumulator for some input.
    DecodeFixedRange {
        /// Index of the layer.
        layer: u16,
    },
    /// The last layer's output size differs from the declared class count.
    DecodeOutputShape,
    /// The arena a model needs does not fit in `usize`/`u32`.
    DecodeTooLarge,
    /// The caller's arena is smaller than [`crate::Model::arena_words_for`] says.
    InferArenaTooSmall {
        /// Words (u32) needed.
        needed: u32,
        /// Words given.
        given: u32,
    },
    /// The input slice length is not `C·H·W` of the model's input.
    InferInputLength,
    /// The output slice length is not the model's class count.
    InferOutputLength,
    /// Integer inference was asked of a model with no integer-path parameters.
    InferNoFixedPoint,
    /// Internal invariant broken: a validated model failed to re-decode (never expected).
    InferCorrupt,
    /// The encoder was given an inconsistent model description.
    EncodeInvalid,
    /// The encoded body would exceed `u32::MAX` bytes.
    EncodeTooLarge,
    /// Calibration got no samples or a sample of the wrong length.
    QuantCalibration,
    /// A value cannot be represented in the integer path (non-finite or out of range).
    QuantOutOfRange {
        /// Index of the layer.
        layer: u16,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match *self {
            DecodeTooShort => f.write_str("decode: fewer bytes than the 16-byte header"),
            DecodeBadMagic => f.write_str("decode: bad magic (not an empf model file)"),
            DecodeUnsupportedVersion { found } => {
                write!(
                    f,
                    "decode: unsupported format version {found} (this build reads 1)"
                )
            }
            DecodeBadFlags => f.write_str("decode: reserved header flags are set"),
            DecodeLengthMismatch => {
                f.write_str("decode: body length in header does not match file")
            }
            DecodeBadCrc => f.write_str("decode: body CRC-32 mismatch (file corrupt)"),
            DecodeBody => f.write_str("decode: body is not a valid v1 model (postcard)"),
            DecodeTrailingBytes => f.write_str("decode: trailing bytes after the last layer"),
            DecodeBadMeta => f.write_str("decode: bad T, input shape or class count"),
            DecodeLayerCount => f.write_str("decode: no layers or too many layers"),
            DecodeParamLength { layer } => write!(f, "decode: layer {layer}: parameter length"),
            DecodeShapeMismatch { layer } => write!(f, "decode: layer {layer}: shape mismatch"),
            DecodeBadField { layer } => write!(f, "decode: layer {layer}: field out of range"),
            DecodeBadSlot { layer } => write!(f, "decode: layer {layer}: bad residual slot"),
            DecodeInconsistentFixed { layer } => {
                write!(
                    f,
                    "decode: layer {layer}: integer parameters present on some layers only"
                )
            }
            DecodeFixedRange { layer } => {
                write!(
                    f,
                    "decode: layer {layer}: integer accumulator could overflow"
                )
            }
            DecodeOutputShape => f.write_str("decode: last layer's size differs from class count"),
            DecodeTooLarge => f.write_str("decode: model needs more memory than addressable"),
            InferArenaTooSmall { needed, given } => {
                write!(
                    f,
                    "infer: arena too small: need {needed} words, got {given}"
                )
            }
            InferInputLength => f.write_str("infer: input length is not C*H*W of the model"),
            InferOutputLength => f.write_str("infer: output length is not the class count"),
            InferNoFixedPoint => f.write_str("infer: model has no integer-path parameters"),
            InferCorrupt => f.write_str("infer: internal error: validated model failed to decode"),
            EncodeInvalid => f.write_str("encode: inconsistent model description"),
            EncodeTooLarge => f.write_str("encode: body larger than 4 GiB"),
            QuantCalibration => f.write_str("quantise: no calibration samples or wrong length"),
            QuantOutOfRange { layer } => {
                write!(
                    f,
                    "quantise: layer {layer}: value not representable in integer path"
                )
            }
        }
    }
}

impl core::error::Error for Error {}
