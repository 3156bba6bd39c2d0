//! Little-endian element reads from borrowed blobs. Indices are validated at decode.

#[inline(always)]
pub(crate) fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

#[inline(always)]
pub(crate) fn i32_at(b: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

#[inline(always)]
pub(crate) fn i16_at(b: &[u8], i: usize) -> i16 {
    i16::from_le_bytes([b[2 * i], b[2 * i + 1]])
}

/// Element `i` of an optional f32 array, or `default` when the array is empty.
#[inline(always)]
pub(crate) fn f32_or(b: &[u8], i: usize, default: f32) -> f32 {
    if b.is_empty() {
        default
    } else {
        f32_at(b, i)
    }
}
