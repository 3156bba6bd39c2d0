//! The board logic on the host: the real Fashion-MNIST MCU model and test images from
//! `boards/models`, the UART and LED as `embedded-hal-mock` devices. Every reply is checked
//! against `empf-core` called directly.

use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use embedded_hal_mock::eh1::serial::{Mock as SerialMock, Transaction as SerialTx};
use empf_board_app::{AppError, Board, Classifier, CoreError, Mode, Model, Path, PixelNorm};

const MODEL: &[u8] = include_bytes!("../../models/fmnist-mcu.empf");
const IMAGES: &[u8] = include_bytes!("../../models/fmnist-test32-images-idx3-ubyte");
const NORM: PixelNorm = PixelNorm::FASHION_MNIST;

fn image(i: usize) -> &'static [u8] {
    &IMAGES[16 + i * 784..16 + (i + 1) * 784]
}

fn arena(path: Path, mode: Mode) -> Vec<u32> {
    let m = Model::decode(MODEL).unwrap();
    vec![0u32; Classifier::arena_words(&m, path, mode)]
}

/// `empf-core` directly: quantise through the pixel table, infer, argmax.
fn core_fixed(pixels: &[u8], mode: Mode) -> (Vec<i32>, usize) {
    let m = Model::decode(MODEL).unwrap();
    let table = m.pixel_table(NORM).unwrap();
    let mut x = vec![0i8; pixels.len()];
    Model::quantize_pixels(&table, pixels, &mut x).unwrap();
    let mut a = vec![0u32; m.arena_words_for(mode)];
    let mut out = vec![0i32; m.classes()];
    m.infer_fixed(&x, mode, &mut a, &mut out).unwrap();
    let class = empf_core::top_k::<1, i32>(&out)[0].0;
    (out, class)
}

fn core_float(pixels: &[u8], mode: Mode) -> Vec<f32> {
    let m = Model::decode(MODEL).unwrap();
    let mut x = vec![0f32; pixels.len()];
    NORM.apply_all(pixels, &mut x).unwrap();
    let mut a = vec![0u32; m.arena_words_for(mode)];
    let mut out = vec![0f32; m.classes()];
    m.infer_float(&x, mode, &mut a, &mut out).unwrap();
    out
}

/// The line `Board::load` announces for the committed model on the integer path.
fn ready_line(mode: Mode) -> String {
    let m = Model::decode(MODEL).unwrap();
    format!(
        "empf ready T={} classes=10 input=1x28x28 path=integer mode={} arena={}\n",
        m.time_steps(),
        match mode {
            Mode::Sequential => "sequential",
            Mode::Parallel => "parallel",
        },
        4 * Classifier::arena_words(&m, Path::Integer, mode)
    )
}

/// The reply `Board::serve_one` sends for integer scores `want`.
fn reply_line(want: &[i32]) -> String {
    let mut line = format!("class {} scores", empf_core::top_k::<1, i32>(want)[0].0);
    for v in want {
        line += &format!(" {v}");
    }
    line.push('\n');
    line
}

#[test]
fn classifier_equals_core_on_every_path_and_mode() {
    for path in [Path::Integer, Path::Float] {
        for mode in [Mode::Sequential, Mode::Parallel] {
            let mut a = arena(path, mode);
            let mut c = Classifier::new(MODEL, path, mode, NORM, &mut a).unwrap();
            for i in 0..32 {
                let s = c.classify(image(i)).unwrap();
                match path {
                    Path::Integer => {
                        let (want, class) = core_fixed(image(i), mode);
                        assert_eq!(s.integer(), &want[..], "image {i}");
                        assert_eq!(s.class, class);
                        assert!(s.float().is_empty());
                    }
                    Path::Float => {
                        let want = core_float(image(i), mode);
                        assert_eq!(s.float(), &want[..], "image {i}");
                        assert!(s.integer().is_empty());
                    }
                }
            }
        }
    }
}

#[test]
fn classifier_refuses_small_arena_bad_bytes_and_wrong_image_size() {
    let mut a = arena(Path::Integer, Mode::Sequential);
    let need = a.len();
    let short = &mut a[..need - 1];
    assert_eq!(
        Classifier::new(MODEL, Path::Integer, Mode::Sequential, NORM, short).err(),
        Some(AppError::ArenaTooSmall {
            need,
            have: need - 1
        })
    );
    let mut bad = MODEL.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    assert_eq!(
        Classifier::new(&bad, Path::Integer, Mode::Sequential, NORM, &mut a).err(),
        Some(AppError::Model(CoreError::DecodeBadCrc))
    );
    let mut c = Classifier::new(MODEL, Path::Integer, Mode::Sequential, NORM, &mut a).unwrap();
    assert_eq!(
        c.classify(&[0u8; 10]).err(),
        Some(AppError::InputLength { want: 784, got: 10 })
    );
}

#[test]
fn serial_session_announces_skips_noise_and_replies_with_core_scores() {
    let mode = Mode::Sequential;
    let ready = ready_line(mode);
    let (want0, class0) = core_fixed(image(0), mode);
    let (want1, _) = core_fixed(image(1), mode);
    let mut tx = vec![SerialTx::write_many(ready.as_bytes()), SerialTx::flush()];
    // Noise before the first frame, including a partial sync.
    tx.push(SerialTx::read_many(b"xxIMxI"));
    for (i, want) in [(0, &want0), (1, &want1)] {
        tx.push(SerialTx::read_many(b"IMG"));
        tx.push(SerialTx::read_many(image(i)));
        tx.push(SerialTx::write_many(reply_line(want).as_bytes()));
        tx.push(SerialTx::flush());
    }
    let serial = SerialMock::new(&tx);
    let led = PinMock::new(&[
        PinTx::set(State::Low),
        PinTx::set(State::High),
        PinTx::set(State::Low),
        PinTx::set(State::High),
        PinTx::set(State::Low),
    ]);
    let mut board = Board::new(serial, led);
    let mut a = arena(Path::Integer, mode);
    let mut c = board
        .load(MODEL, Path::Integer, mode, NORM, &mut a)
        .unwrap();
    let mut buf = [0u8; 784];
    let s0 = board.serve_one(&mut c, &mut buf).unwrap();
    assert_eq!(s0.integer(), &want0[..]);
    assert_eq!(s0.class, class0);
    let s1 = board.serve_one(&mut c, &mut buf).unwrap();
    assert_eq!(s1.integer(), &want1[..]);
    let (mut serial, mut led) = board.release();
    serial.done();
    led.done();
}

#[test]
fn malformed_model_is_reported_on_the_uart_and_lights_the_led() {
    let mut bad = MODEL.to_vec();
    bad[0] = b'X';
    let want = format!("error {}\n", AppError::Model(CoreError::DecodeBadMagic));
    assert!(want.starts_with("error model: "), "{want}");
    let serial = SerialMock::new(&[SerialTx::write_many(want.as_bytes()), SerialTx::flush()]);
    let led = PinMock::new(&[PinTx::set(State::High)]);
    let mut board = Board::new(serial, led);
    let mut a = arena(Path::Integer, Mode::Sequential);
    let err = board
        .load(&bad, Path::Integer, Mode::Sequential, NORM, &mut a)
        .err();
    assert_eq!(err, Some(AppError::Model(CoreError::DecodeBadMagic)));
    let (mut serial, mut led) = board.release();
    serial.done();
    led.done();
}

#[test]
fn a_uart_error_is_returned_not_swallowed() {
    use embedded_hal_nb::serial::ErrorKind;
    let mode = Mode::Sequential;
    let ready = ready_line(mode);
    let serial = SerialMock::new(&[
        SerialTx::write_many(ready.as_bytes()),
        SerialTx::flush(),
        SerialTx::read_many(b"IMG"),
        SerialTx::read_error(nb::Error::Other(ErrorKind::Overrun)),
    ]);
    let led = PinMock::new(&[PinTx::set(State::Low)]);
    let mut board = Board::new(serial, led);
    let mut a = arena(Path::Integer, mode);
    let mut c = board
        .load(MODEL, Path::Integer, mode, NORM, &mut a)
        .unwrap();
    let mut buf = [0u8; 784];
    assert_eq!(
        board.serve_one(&mut c, &mut buf).err(),
        Some(AppError::Serial)
    );
    let (mut serial, mut led) = board.release();
    serial.done();
    led.done();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever bytes precede a frame (short of the sync word itself), the board classifies the
    /// frame's image and nothing else.
    #[test]
    fn any_noise_before_the_sync_word_is_skipped(
        noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        index in 0usize..32,
    ) {
        proptest::prop_assume!(!noise.windows(3).any(|w| w == b"IMG"));
        let mode = Mode::Sequential;
        let ready = ready_line(mode);
        let (want, _) = core_fixed(image(index), mode);
        let line = reply_line(&want);
        let mut tx = vec![SerialTx::write_many(ready.as_bytes()), SerialTx::flush()];
        if !noise.is_empty() {
            tx.push(SerialTx::read_many(&noise));
        }
        tx.push(SerialTx::read_many(b"IMG"));
        tx.push(SerialTx::read_many(image(index)));
        tx.push(SerialTx::write_many(line.as_bytes()));
        tx.push(SerialTx::flush());
        let serial = SerialMock::new(&tx);
        let led = PinMock::new(&[
            PinTx::set(State::Low),
            PinTx::set(State::High),
            PinTx::set(State::Low),
        ]);
        let mut board = Board::new(serial, led);
        let mut a = arena(Path::Integer, mode);
        let mut c = board.load(MODEL, Path::Integer, mode, NORM, &mut a).unwrap();
        let mut buf = [0u8; 784];
        let s = board.serve_one(&mut c, &mut buf).unwrap();
        proptest::prop_assert_eq!(s.integer(), &want[..]);
        let (mut serial, mut led) = board.release();
        serial.done();
        led.done();
    }
}

/// The float-free constructor (pixel table computed ahead of time) gives the same scores as the
/// general one, and refuses a model without an integer path.
#[test]
fn new_integer_with_a_precomputed_table_equals_new() {
    let m = Model::decode(MODEL).unwrap();
    let table = m.pixel_table(NORM).unwrap();
    for mode in [Mode::Sequential, Mode::Parallel] {
        let (mut a, mut b) = (arena(Path::Integer, mode), arena(Path::Integer, mode));
        let mut general = Classifier::new(MODEL, Path::Integer, mode, NORM, &mut a).unwrap();
        let mut lean = Classifier::new_integer(MODEL, mode, table, &mut b).unwrap();
        assert_eq!(lean.path(), Path::Integer);
        for i in 0..32 {
            assert_eq!(
                lean.classify(image(i)).unwrap(),
                general.classify(image(i)).unwrap()
            );
        }
    }
    // A wrong table changes the result: the table is really used.
    let mut a = arena(Path::Integer, Mode::Sequential);
    let mut wrong = Classifier::new_integer(MODEL, Mode::Sequential, [0; 256], &mut a).unwrap();
    let (want, _) = core_fixed(image(0), Mode::Sequential);
    assert_ne!(wrong.classify(image(0)).unwrap().integer(), &want[..]);
}
