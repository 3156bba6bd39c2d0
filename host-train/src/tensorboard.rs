//! TensorBoard event files, written by hand: a TFRecord stream of `Event` protobufs with one
//! scalar `Summary` per metric, so `tensorboard --logdir runs/` shows a run's curves.
//!
//! Format (TensorFlow `record_writer.cc`, `event.proto`, `summary.proto`): each record is
//! `u64 length (LE) · masked CRC-32C of the length · data · masked CRC-32C of the data`, with
//! `masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`. The first event carries
//! `file_version = "brain.Event:2"`; then one event per epoch with `step` = epoch and a summary
//! of `simple_value` scalars. The whole file is rewritten from the run's records after every
//! epoch (`MetricsLog`), so a resumed or truncated run never holds stale points.

use crate::metrics::EpochRecord;

/// The event file's name inside the run directory (TensorBoard reads any `*tfevents*` file).
pub const EVENTS_FILE: &str = "events.out.tfevents.empf";

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise table built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC32C_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

/// TFRecord's masked CRC.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one TFRecord holding `data`.
pub fn push_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// An `Event` protobuf: wall time, step, and either the file version or scalar summaries.
pub fn event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalars: &[(&str, f32)],
) -> Vec<u8> {
    let mut e = Vec::new();
    key(&mut e, 1, 1);
    e.extend_from_slice(&wall_time.to_le_bytes());
    key(&mut e, 2, 0);
    varint(&mut e, step as u64);
    if let Some(v) = file_version {
        bytes_field(&mut e, 3, v.as_bytes());
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for &(tag, value) in scalars {
            let mut v = Vec::new();
            bytes_field(&mut v, 1, tag.as_bytes());
            key(&mut v, 2, 5);
            v.extend_from_slice(&value.to_le_bytes());
            bytes_field(&mut summary, 1, &v);
        }
        bytes_field(&mut e, 5, &summary);
    }
    e
}

/// The event file of a run: the version event, then one event per record (wall time = the
/// run's start plus the epochs' cumulative wall seconds).
pub fn events_file(records: &[EpochRecord], start_unix_s: f64) -> Vec<u8> {
    let mut out = Vec::new();
    push_record(
        &mut out,
        &event(start_unix_s, 0, Some("brain.Event:2"), &[]),
    );
    let mut wall = start_unix_s;
    for r in records {
        wall += r.wall_s;
        let mut owned: Vec<(String, f32)> = vec![
            ("train/loss".into(), r.train_loss as f32),
            ("train/accuracy".into(), r.train_acc as f32),
            ("test/accuracy".into(), r.test_acc as f32),
            ("train/learning_rate".into(), r.lr as f32),
            ("train/images_per_s".into(), r.images_per_s as f32),
        ];
        // One curve per neuron layer, named as its parameters are (`neuron{k}.…`).
        owned.extend(
            r.spike_rates
                .iter()
                .enumerate()
                .map(|(k, &rate)| (format!("test/spike_rate/neuron{k}"), rate as f32)),
        );
        let scalars: Vec<(&str, f32)> = owned.iter().map(|(t, v)| (t.as_str(), *v)).collect();
        push_record(&mut out, &event(wall, r.epoch as i64, None, &scalars));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // The CRC catalogue's check value of CRC-32C ("123456789").
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    fn read_varint(b: &[u8], at: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*at];
            *at += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    /// (field, wire, payload) of every top-level field of a protobuf message.
    fn fields(b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        let (mut at, mut out) = (0, Vec::new());
        while at < b.len() {
            let k = read_varint(b, &mut at);
            let (field, wire) = (k >> 3, k & 7);
            let payload = match wire {
                0 => {
                    let s = at;
                    read_varint(b, &mut at);
                    b[s..at].to_vec()
                }
                1 => {
                    at += 8;
                    b[at - 8..at].to_vec()
                }
                5 => {
                    at += 4;
                    b[at - 4..at].to_vec()
                }
                2 => {
                    let n = read_varint(b, &mut at) as usize;
                    at += n;
                    b[at - n..at].to_vec()
                }
                w => panic!("wire type {w}"),
            };
            out.push((field, wire, payload));
        }
        out
    }

    #[test]
    fn the_file_is_tfrecords_of_events_with_the_run_s_scalars() {
        let records = [1u64, 2].map(|epoch| EpochRecord {
            epoch,
            train_loss: 0.5 / epoch as f64,
            train_acc: 0.8,
            test_acc: 0.85 + 0.01 * epoch as f64,
            lr: 0.05,
            images_per_s: 150.0,
            wall_s: 10.0,
            spike_rates: vec![0.25, 0.125 * epoch as f64],
        });
        let file = events_file(&records, 1000.0);
        let (mut at, mut events) = (0, Vec::new());
        while at < file.len() {
            let len_bytes = &file[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(len_bytes));
            let data = &file[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(file[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            events.push(data.to_vec());
            at += 16 + len;
        }
        assert_eq!(at, file.len());
        assert_eq!(events.len(), 3);
        let first = fields(&events[0]);
        assert!(first
            .iter()
            .any(|(f, _, p)| *f == 3 && p == b"brain.Event:2"));
        let second = fields(&events[2]);
        let wall = second.iter().find(|(f, _, _)| *f == 1).unwrap();
        assert_eq!(
            f64::from_le_bytes(wall.2.clone().try_into().unwrap()),
            1020.0
        );
        let step = second.iter().find(|(f, _, _)| *f == 2).unwrap();
        assert_eq!(step.2, vec![2]);
        let summary = &second.iter().find(|(f, _, _)| *f == 5).unwrap().2;
        let values: Vec<(String, f32)> = fields(summary)
            .into_iter()
            .map(|(_, _, v)| {
                let vf = fields(&v);
                let tag = String::from_utf8(vf[0].2.clone()).unwrap();
                (tag, f32::from_le_bytes(vf[1].2.clone().try_into().unwrap()))
            })
            .collect();
        assert_eq!(values[0], ("train/loss".to_string(), 0.25));
        assert_eq!(values[2], ("test/accuracy".to_string(), 0.87));
        assert_eq!(values[5], ("test/spike_rate/neuron0".to_string(), 0.25));
        assert_eq!(values[6], ("test/spike_rate/neuron1".to_string(), 0.25));
        assert_eq!(values.len(), 7);
    }
}
