//! Exact bytes of a whole file, encode→decode round trips, and decoding of hostile bytes.
mod common;
use common::Rng;
use common::*;
use empf_core::format::*;
use empf_core::quant::{calibrate, quantize};
use empf_core::{Error, Mode, Model};
use proptest::prelude::*;
use std::sync::OnceLock;

/// A one-layer model pinned byte for byte (see `core/spec/format.md`, "Worked example").
#[test]
fn whole_file_exact_bytes() {
    let w: Vec<u8> = [1.0f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let b: Vec<u8> = 0.5f32.to_le_bytes().to_vec();
    let meta = ModelMeta {
        time_steps: 4,
        input: Shape3 { c: 2, h: 1, w: 1 },
        classes: 1,
        encoding: InputEncoding::Direct,
        fixed: None,
    };
    let layers = [Layer::Linear(Linear {
        out_features: 1,
        in_features: 2,
        weight: Blob(&w[..]),
        bias: Blob(&b[..]),
        fixed: None,
    })];
    let bytes = encode_model(&meta, &layers).unwrap();
    let body: Vec<u8> = vec![
        4, 2, 1, 1, 1, 0, 0, // T=4, input c=2 h=1 w=1, classes=1, Direct, fixed=None
        1, // one layer
        2, // Layer::Linear (variant 2)
        1, 2, // out_features=1, in_features=2 (varints)
        8, 0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0, // weight: 8 bytes, 1.0f32, -2.0f32
        4, 0x00, 0x00, 0x00, 0x3F, // bias: 4 bytes, 0.5f32
        0,    // fixed=None
    ];
    let crc = empf_core::crc32(&body).to_le_bytes();
    let mut expect = vec![
        b'E',
        b'M',
        b'P',
        b'F',
        1,
        0,
        0,
        0,
        body.len() as u8,
        0,
        0,
        0,
    ];
    expect.extend_from_slice(&crc);
    expect.extend_from_slice(&body);
    assert_eq!(bytes, expect);
    let m = Model::decode(&bytes).unwrap();
    let mut arena = vec![0u32; m.arena_words_for(Mode::Sequential)];
    let mut out = [0.0f32];
    m.infer_float(&[3.0, 1.0], Mode::Sequential, &mut arena, &mut out)
        .unwrap();
    assert_eq!(out, [4.0 * (3.0 - 2.0 + 0.5)]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// decode(encode(m)) gives back the same layers, and re-encoding gives the same bytes.
    #[test]
    fn encode_decode_round_trip(seed in any::<u64>(), calibrate_it in any::<bool>()) {
        let mut rng = Rng(seed);
        let dm = random_model(&mut rng, false);
        let (meta, layers) = dm.wire();
        let mut bytes = encode_model(&meta, &layers).unwrap();
        if calibrate_it {
            let m = Model::decode(&bytes).unwrap();
            let xs: Vec<Vec<f32>> = (0..4).map(|_| random_input(&mut rng, &dm)).collect();
            let cal = calibrate(&m, xs.iter().map(|x| x.as_slice())).unwrap();
            bytes = quantize(&m, &cal).unwrap();
        }
        let m = Model::decode(&bytes).unwrap();
        prop_assert_eq!(m.meta().time_steps as usize, dm.t);
        let decoded: Vec<Layer<Vec<u8>>> = m.layers().map(|l| l.unwrap().map(&mut |b: &[u8]| b.to_vec())).collect();
        if !calibrate_it {
            prop_assert_eq!(&decoded, &layers);
        }
        let again = encode_model(m.meta(), &decoded).unwrap();
        prop_assert_eq!(again, bytes);
    }
}

/// A pool of valid files (float and calibrated) to mutate.
fn pool() -> &'static Vec<Vec<u8>> {
    static POOL: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    POOL.get_or_init(|| {
        (0..24u64)
            .map(|seed| {
                let mut rng = Rng(seed);
                let dm = random_model(&mut rng, seed % 3 == 0);
                let bytes = dm.encode();
                if seed % 2 == 0 {
                    let m = Model::decode(&bytes).unwrap();
                    let xs: Vec<Vec<f32>> = (0..4).map(|_| random_input(&mut rng, &dm)).collect();
                    quantize(&m, &calibrate(&m, xs.iter().map(|x| x.as_slice())).unwrap()).unwrap()
                } else {
                    bytes
                }
            })
            .collect()
    })
}

/// Runs everything a user could run on a decoded model; none of it may panic.
fn exercise(bytes: &[u8]) -> Result<(), Error> {
    let m = Model::decode(bytes)?;
    let n = m.input_shape().numel();
    let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 / 5.0 - 1.0).collect();
    let mut out = vec![0.0; m.classes()];
    for mode in [Mode::Sequential, Mode::Parallel] {
        let mut arena = vec![0u32; m.arena_words_for(mode)];
        m.infer_float(&x, mode, &mut arena, &mut out)?;
        if m.fixed_meta().is_some() {
            let mut xq = vec![0i8; n];
            m.quantize_input(&x, &mut xq)?;
            let mut q = vec![0; m.classes()];
            m.infer_fixed(&xq, mode, &mut arena, &mut q)?;
        }
    }
    Ok(())
}

fn fix_header(file: &mut [u8]) {
    let body = file[HEADER_LEN..].to_vec();
    let h = Header::for_body(&body).unwrap();
    file[..HEADER_LEN].copy_from_slice(&h.to_bytes());
}

fn cases() -> u32 {
    std::env::var("EMPF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes, with a valid header half of the time so the body decoder is reached.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), header in any::<bool>()) {
        if header && bytes.len() >= HEADER_LEN {
            fix_header(&mut bytes);
        }
        let _ = exercise(&bytes);
    }
}

/// Valid files with mutated bodies (byte flips, cuts, inserts) and a recomputed CRC, so the
/// mutation reaches validation and inference instead of stopping at the checksum. Counts how many
/// mutants still decode and run, so the test proves it exercised inference, not only rejection.
#[test]
fn decoding_mutated_models_never_panics() {
    let files = pool();
    let mut rng = Rng(0x5EED);
    let (mut ran, n) = (0usize, cases() as usize);
    for _ in 0..n {
        let mut file = files[rng.below(files.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let body_len = file.len() - HEADER_LEN;
            if body_len == 0 {
                break;
            }
            let i = HEADER_LEN + rng.below(body_len);
            let val = rng.next_u64() as u8;
            match rng.below(8) {
                0..=3 => file[i] = val,
                4 | 5 => file[i] ^= 1 << (val % 8),
                6 => file.truncate(i),
                _ => file.insert(i, val),
            }
        }
        fix_header(&mut file);
        ran += exercise(&file).is_ok() as usize;
    }
    println!("{ran} of {n} mutants decoded and ran");
    assert!(ran * 50 >= n, "only {ran} of {n} mutants reached inference");
}

#[test]
fn corrupt_files_give_named_errors() {
    let file = pool()[1].clone();
    assert!(exercise(&file).is_ok());
    let mut f = file.clone();
    f[20] ^= 0x40;
    assert_eq!(Model::decode(&f).unwrap_err(), Error::DecodeBadCrc);
    assert_eq!(
        Model::decode(&file[..file.len() - 3]).unwrap_err(),
        Error::DecodeLengthMismatch
    );
    assert_eq!(
        Model::decode(b"PK\x03\x04 not a model at all").unwrap_err(),
        Error::DecodeBadMagic
    );
    // Trailing garbage inside the checksummed body.
    let mut f = file.clone();
    f.push(0);
    fix_header(&mut f);
    assert_eq!(Model::decode(&f).unwrap_err(), Error::DecodeTrailingBytes);
}

/// `MaxPool` is layer variant 12 (appended: every earlier variant keeps its index), with its
/// three `u8` fields in wire order; decode refuses a kernel or stride of 0, padding ≥ kernel
/// (`DecodeBadField`) and a window larger than the padded input (`DecodeShapeMismatch`),
/// naming the layer.
#[test]
fn maxpool_exact_bytes_and_field_checks() {
    let meta = ModelMeta {
        time_steps: 1,
        input: Shape3 { c: 1, h: 3, w: 3 },
        classes: 4,
        encoding: InputEncoding::Direct,
        fixed: None,
    };
    let pool = |kernel, stride, padding| {
        [
            Layer::<&[u8]>::MaxPool(MaxPool {
                kernel,
                stride,
                padding,
            }),
            Layer::Flatten,
        ]
    };
    let bytes = encode_model(&meta, &pool(2, 1, 0)).unwrap();
    // meta (7 bytes), count 2, MaxPool = variant 12, kernel 2, stride 1, padding 0, Flatten = 7.
    assert_eq!(
        &bytes[HEADER_LEN..],
        &[1, 1, 3, 3, 4, 0, 0, 2, 12, 2, 1, 0, 7]
    );
    let m = Model::decode(&bytes).unwrap();
    let x = [1.0f32, -2.0, 3.0, -4.0, -5.0, -6.0, 7.0, 0.5, -9.0];
    let mut arena = vec![0u32; m.arena_words_for(Mode::Sequential)];
    let mut out = [0.0f32; 4];
    m.infer_float(&x, Mode::Sequential, &mut arena, &mut out)
        .unwrap();
    assert_eq!(out, [1.0, 3.0, 7.0, 0.5]);
    assert_eq!(m.layer_infos().next().unwrap().unwrap().kind, "maxpool");

    // The encoder decodes what it wrote and returns decode's error as is.
    let refused = |k, s, p, classes| {
        let meta = ModelMeta { classes, ..meta };
        encode_model(&meta, &pool(k, s, p)).unwrap_err()
    };
    let bad_field = Error::DecodeBadField { layer: 0 };
    assert_eq!(refused(0, 1, 0, 9), bad_field);
    assert_eq!(refused(2, 0, 0, 4), bad_field);
    assert_eq!(refused(2, 1, 2, 16), bad_field);
    assert_eq!(refused(5, 1, 0, 1), Error::DecodeShapeMismatch { layer: 0 });
    // The largest padding allowed, and a window of the whole padded input: one output each.
    let ok = |k, s, p, classes| {
        let meta = ModelMeta { classes, ..meta };
        encode_model(&meta, &pool(k, s, p)).map(|_| ())
    };
    assert_eq!(ok(3, 1, 2, 25), Ok(()));
    assert_eq!(ok(5, 3, 1, 1), Ok(()));
}
