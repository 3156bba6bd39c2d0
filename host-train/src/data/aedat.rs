//! AEDAT event files (jAER / cAER) and their integration into frames.
//!
//! A file starts with header lines beginning with `#` (`#!AER-DAT3.1`, `#Format: RAW`,
//! `#Source …`, …, `#!END-HEADER`), each ending in `\r\n`; the version is read from the first.
//!
//! **AEDAT 3.1** (cAER): then event packets, little-endian, each a 28-byte header
//!
//! | bytes | field |
//! |---|---|
//! | 0–1 | event type (`i16`; 1 = polarity) |
//! | 2–3 | event source (`i16`) |
//! | 4–7 | event size in bytes (`i32`; 8 for polarity) |
//! | 8–11 | offset of the timestamp in an event (`i32`; 4) |
//! | 12–15 | timestamp overflow counter (`i32`; full time = overflow·2³¹ + timestamp) |
//! | 16–19 | event capacity (`i32`; events stored in the packet) |
//! | 20–23 | event number (`i32`; events in use, ≤ capacity) |
//! | 24–27 | valid events (`i32`) |
//!
//! followed by `capacity · size` bytes of events. A polarity event is a `u32` data word — bit 0
//! valid, bit 1 polarity (1 = ON), bits 2–16 y, bits 17–31 x — then an `i32` timestamp (µs).
//! Packets of other types are skipped; invalid events (bit 0 clear) are dropped.
//!
//! **AEDAT 2.0** (jAER; what SpikingJelly's CIFAR10-DVS loader parses): big-endian `u32` pairs
//! (address, timestamp); for the DVS128 address, bit 0 is the polarity, bits 1–7 x, bits 8–14 y.
//! Like SpikingJelly, x is mirrored (`127 − x`) and the polarity inverted (`1 − p`), so both
//! versions give ON = 1 and the same image orientation for CIFAR10-DVS.
//!
//! Integration ([`integrate_by_count`]): SpikingJelly's `split_by='number'` — `N` events are
//! cut into `T` consecutive slices of `⌊N/T⌋` events (the last takes the remainder), and each
//! slice is counted per (polarity, y, x) into a `[T][2][H][W]` frame stack.

use super::DataError;
use std::path::Path;

/// One polarity event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Timestamp, µs (overflow counter included).
    pub t: i64,
    /// Column.
    pub x: u16,
    /// Row.
    pub y: u16,
    /// 1 = ON, 0 = OFF.
    pub p: u8,
}

/// Most header bytes accepted before the events (real headers are a few hundred bytes).
pub const MAX_HEADER_BYTES: usize = 1 << 20;

fn bad(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// AEDAT versions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// jAER 2.0.
    V2,
    /// cAER 3.1.
    V31,
}

/// Splits the header off: returns the version and the offset of the first event byte.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<(Version, usize), DataError> {
    let mut at = 0;
    let mut version = None;
    while at < bytes.len() && bytes[at] == b'#' {
        let end = bytes[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| at + i + 1)
            .ok_or_else(|| bad(path, "header line without an end"))?;
        if end > MAX_HEADER_BYTES {
            return Err(bad(
                path,
                format!("header longer than {MAX_HEADER_BYTES} bytes"),
            ));
        }
        let line = String::from_utf8_lossy(&bytes[at..end]);
        let line = line.trim();
        if at == 0 {
            version = match line {
                "#!AER-DAT3.1" => Some(Version::V31),
                "#!AER-DAT2.0" => Some(Version::V2),
                other => {
                    return Err(bad(
                        path,
                        format!("unsupported AEDAT version line {other:?} (expected #!AER-DAT3.1 or #!AER-DAT2.0)"),
                    ))
                }
            };
        }
        at = end;
        if line == "#!END-HEADER" {
            break;
        }
    }
    let version = version.ok_or_else(|| {
        bad(
            path,
            "no AEDAT header (first line must start with #!AER-DAT)",
        )
    })?;
    Ok((version, at))
}

fn le_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads all polarity events of an AEDAT 3.1 or 2.0 file's bytes, checking every address
/// against `width × height`; `path` names the file in errors.
pub fn parse_events(
    bytes: &[u8],
    width: u16,
    height: u16,
    path: &Path,
) -> Result<Vec<Event>, DataError> {
    let (version, start) = parse_header(bytes, path)?;
    let body = &bytes[start..];
    let mut events = Vec::new();
    let check = |e: Event, at: usize| -> Result<Event, DataError> {
        if e.x >= width || e.y >= height {
            return Err(bad(
                path,
                format!(
                    "event at byte {} has address ({}, {}) outside the {width}x{height} sensor",
                    start + at,
                    e.x,
                    e.y
                ),
            ));
        }
        Ok(e)
    };
    match version {
        Version::V2 => {
            if !body.len().is_multiple_of(8) {
                return Err(bad(
                    path,
                    format!(
                        "{} event bytes is not a whole number of 8-byte AEDAT 2.0 events",
                        body.len()
                    ),
                ));
            }
            events.reserve(body.len() / 8);
            for (k, ev) in body.chunks_exact(8).enumerate() {
                let addr = u32::from_be_bytes([ev[0], ev[1], ev[2], ev[3]]);
                let t = u32::from_be_bytes([ev[4], ev[5], ev[6], ev[7]]);
                let x = ((addr >> 1) & 0x7f) as u16;
                let y = ((addr >> 8) & 0x7f) as u16;
                let p = (addr & 1) as u8;
                // SpikingJelly's orientation and polarity for the DVS128 (see the module docs).
                let e = Event {
                    t: i64::from(t),
                    x: 127u16.saturating_sub(x),
                    y,
                    p: 1 - p,
                };
                events.push(check(e, 8 * k)?);
            }
        }
        Version::V31 => {
            let mut at = 0;
            while at < body.len() {
                if body.len() - at < 28 {
                    return Err(bad(
                        path,
                        format!("truncated packet header at byte {}", start + at),
                    ));
                }
                let h = &body[at..at + 28];
                let kind = i16::from_le_bytes([h[0], h[1]]);
                let size = le_i32(h, 4);
                let ts_offset = le_i32(h, 8);
                let overflow = le_i32(h, 12);
                let capacity = le_i32(h, 16);
                let number = le_i32(h, 20);
                if size <= 0 || capacity < 0 || number < 0 || number > capacity || overflow < 0 {
                    return Err(bad(
                        path,
                        format!("packet at byte {}: event size {size}, capacity {capacity}, number {number}, overflow {overflow}", start + at),
                    ));
                }
                let payload = (size as u64) * (capacity as u64);
                let rest = (body.len() - at - 28) as u64;
                if payload > rest {
                    return Err(bad(
                        path,
                        format!("packet at byte {} announces {payload} event bytes, only {rest} remain (truncated file or corrupt header)", start + at),
                    ));
                }
                let data = &body[at + 28..at + 28 + payload as usize];
                if kind == 1 {
                    if size < 8 || !(0..=size - 4).contains(&ts_offset) {
                        return Err(bad(
                            path,
                            format!("polarity packet at byte {} with event size {size}, timestamp offset {ts_offset}", start + at),
                        ));
                    }
                    let (size, ts_offset) = (size as usize, ts_offset as usize);
                    for (k, ev) in data.chunks_exact(size).take(number as usize).enumerate() {
                        let word = u32::from_le_bytes([ev[0], ev[1], ev[2], ev[3]]);
                        if word & 1 == 0 {
                            continue; // invalidated event
                        }
                        let ts = le_i32(ev, ts_offset);
                        let e = Event {
                            t: (i64::from(overflow) << 31) | i64::from(ts.max(0)),
                            x: ((word >> 17) & 0x7fff) as u16,
                            y: ((word >> 2) & 0x7fff) as u16,
                            p: ((word >> 1) & 1) as u8,
                        };
                        events.push(check(e, at + 28 + k * size)?);
                    }
                }
                at += 28 + payload as usize;
            }
        }
    }
    Ok(events)
}

/// Counts `events` into `frames` slices of equal event count (see the module docs):
/// `[T][2][height][width]`, channel = polarity.
pub fn integrate_by_count(
    events: &[Event],
    frames: usize,
    width: usize,
    height: usize,
) -> Vec<f32> {
    let plane = width * height;
    let mut out = vec![0.0f32; frames * 2 * plane];
    if frames == 0 {
        return out;
    }
    let n = events.len();
    let per = n / frames;
    for t in 0..frames {
        let lo = t * per;
        let hi = if t + 1 == frames { n } else { lo + per };
        let frame = &mut out[t * 2 * plane..(t + 1) * 2 * plane];
        for e in &events[lo..hi] {
            let (x, y) = (usize::from(e.x), usize::from(e.y));
            if x < width && y < height {
                frame[usize::from(e.p.min(1)) * plane + y * width + x] += 1.0;
            }
        }
    }
    out
}

/// Test fixtures: AEDAT files in the real layouts.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    /// An AEDAT 3.1 file: real header, then the events in packets of `per_packet`, with one
    /// packet of another type (special events) in between and one invalidated event.
    pub fn aedat31(events: &[Event], per_packet: usize) -> Vec<u8> {
        let mut out = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n".to_vec();
        let header =
            |out: &mut Vec<u8>, kind: i16, size: i32, cap: i32, number: i32, overflow: i32| {
                out.extend_from_slice(&kind.to_le_bytes());
                out.extend_from_slice(&1i16.to_le_bytes());
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(&4i32.to_le_bytes());
                out.extend_from_slice(&overflow.to_le_bytes());
                out.extend_from_slice(&cap.to_le_bytes());
                out.extend_from_slice(&number.to_le_bytes());
                out.extend_from_slice(&number.to_le_bytes());
            };
        // A special-event packet (type 0) first: skipped by the reader.
        header(&mut out, 0, 8, 1, 1, 0);
        out.extend_from_slice(&[0u8; 8]);
        for chunk in events.chunks(per_packet.max(1)) {
            let overflow = (chunk[0].t >> 31) as i32;
            // One extra, invalid event at the end of each packet.
            header(
                &mut out,
                1,
                8,
                chunk.len() as i32 + 1,
                chunk.len() as i32 + 1,
                overflow,
            );
            for e in chunk {
                let word =
                    (u32::from(e.x) << 17) | (u32::from(e.y) << 2) | (u32::from(e.p) << 1) | 1;
                out.extend_from_slice(&word.to_le_bytes());
                out.extend_from_slice(&((e.t & 0x7fff_ffff) as i32).to_le_bytes());
            }
            out.extend_from_slice(&((5u32 << 17) | (5 << 2)).to_le_bytes());
            out.extend_from_slice(&0i32.to_le_bytes());
        }
        out
    }

    /// An AEDAT 2.0 file with the DVS128 address layout (x mirrored, polarity inverted).
    pub fn aedat2(events: &[Event]) -> Vec<u8> {
        let mut out = b"#!AER-DAT2.0\r\n# This is a raw AE data file created by jAER\r\n".to_vec();
        for e in events {
            let x = 127 - u32::from(e.x);
            let addr = (u32::from(e.y) << 8) | (x << 1) | u32::from(1 - e.p);
            out.extend_from_slice(&addr.to_be_bytes());
            out.extend_from_slice(&(e.t as u32).to_be_bytes());
        }
        out
    }

    /// `n` events spread over a 128×128 sensor.
    pub fn events(n: usize, seed: u64) -> Vec<Event> {
        let mut r = crate::rng::Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| Event {
                t: 10 * i as i64,
                x: r.below(128) as u16,
                y: r.below(128) as u16,
                p: r.below(2) as u8,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use super::*;

    #[test]
    fn both_versions_read_back_the_events() {
        let p = Path::new("e.aedat");
        let ev = events(250, 1);
        let got = parse_events(&aedat31(&ev, 64), 128, 128, p).unwrap();
        assert_eq!(
            got, ev,
            "AEDAT 3.1, invalid events and other packet types skipped"
        );
        let got = parse_events(&aedat2(&ev), 128, 128, p).unwrap();
        assert_eq!(got, ev, "AEDAT 2.0");
        // Timestamps past 2^31 µs use the packet's overflow counter.
        let late = vec![Event {
            t: (3i64 << 31) | 77,
            x: 1,
            y: 2,
            p: 1,
        }];
        assert_eq!(parse_events(&aedat31(&late, 8), 128, 128, p).unwrap(), late);
    }

    #[test]
    fn integration_by_count_splits_like_spikingjelly() {
        let ev = events(103, 2);
        let f = integrate_by_count(&ev, 10, 128, 128);
        assert_eq!(f.len(), 10 * 2 * 128 * 128);
        let plane = 2 * 128 * 128;
        for t in 0..10 {
            let sum: f32 = f[t * plane..(t + 1) * plane].iter().sum();
            assert_eq!(sum, if t < 9 { 10.0 } else { 13.0 }, "frame {t}");
        }
        // The first event lands in frame 0 at (p, y, x).
        let e = ev[0];
        assert!(f[usize::from(e.p) * 128 * 128 + usize::from(e.y) * 128 + usize::from(e.x)] >= 1.0);
        // Fewer events than frames: the last frame takes them all.
        let f = integrate_by_count(&ev[..3], 10, 128, 128);
        assert_eq!(f[9 * plane..].iter().sum::<f32>(), 3.0);
    }

    #[test]
    fn corrupt_files_are_errors_never_panics() {
        let p = Path::new("bad.aedat");
        let ev = events(40, 3);
        let good = aedat31(&ev, 16);
        // Every truncation is an error or a shorter valid prefix, never a panic.
        for cut in 0..good.len() {
            let _ = parse_events(&good[..cut], 128, 128, p);
        }
        let (_, start) = parse_header(&good, p).unwrap();
        let cut = &good[..good.len() - 3];
        let err = parse_events(cut, 128, 128, p).unwrap_err();
        assert!(
            err.to_string().contains("bad.aedat") && err.to_string().contains("remain"),
            "{err}"
        );
        // An absurd capacity in the first packet header is refused before anything is read.
        let mut absurd = good.clone();
        absurd[start + 16..start + 20].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(parse_events(&absurd, 128, 128, p).is_err());
        let mut neg = good.clone();
        neg[start + 4..start + 8].copy_from_slice(&(-8i32).to_le_bytes());
        assert!(parse_events(&neg, 128, 128, p).is_err());
        // Address outside the sensor; wrong version; no header; 2.0 with a partial event.
        let big = vec![Event {
            t: 0,
            x: 200,
            y: 0,
            p: 0,
        }];
        assert!(parse_events(&aedat31(&big, 1), 128, 128, p)
            .unwrap_err()
            .to_string()
            .contains("outside"));
        assert!(parse_events(b"#!AER-DAT4.0\r\n", 128, 128, p).is_err());
        assert!(parse_events(b"\x00\x01\x02", 128, 128, p).is_err());
        let mut v2 = aedat2(&ev);
        v2.pop();
        assert!(parse_events(&v2, 128, 128, p).is_err());
        // A header line with no end.
        assert!(parse_events(b"#!AER-DAT3.1", 128, 128, p).is_err());
    }
}
