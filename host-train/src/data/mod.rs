//! Datasets, normalisation, augmentation and a multi-threaded batch loader.
//!
//! Formats, each read from the files the official sites distribute (nothing downloads):
//! * MNIST and Fashion-MNIST idx files, raw or gzipped ([`idx`], [`Dataset::load`]). Files are
//!   looked up in a directory by their standard names ([`Split::file_names`]); the default
//!   directory is [`DEFAULT_FASHION_MNIST_DIR`], where Debian's `dataset-fashion-mnist` installs
//!   them.
//! * CIFAR-10 / CIFAR-100 binary versions, from the official archive (MD5-checked) or extracted
//!   ([`cifar`]).
//! * Tiny-ImageNet and ImageNet-1k JPEG/PNG folders, decoded lazily in the loader's workers
//!   ([`folder`], [`image`]).
//! * CIFAR10-DVS AEDAT 3.1 (and 2.0) event files integrated into `T` frames by event count,
//!   2 polarity channels, resized to 48×48 ([`aedat`], [`dvs`]).
//!
//! Storage: in-memory images are `u8`, **CHW** per sample (`[N][C][H][W]`): CIFAR's binary files
//! are already planar, so they load with one copy, and every augmentation works on whole planes.
//! The loader hands the trainer `f32` batches `[B][C][H][W]` (event data: `[T][B][C][H][W]`).
//! Labels are `u16` (≤ 65 536 classes; ImageNet has 1 000).
//!
//! Every check ([`DataError`]) names the file it failed on: missing file, bad magic, truncated or
//! trailing bytes, bad dimensions, a label ≥ the number of classes, an image/label count
//! mismatch. A loaded [`Dataset`] is valid by construction, so the loader does not re-check it.

pub mod aedat;
pub mod augment;
pub mod autoaugment;
pub mod bench;
pub mod checksum;
pub mod cifar;
pub mod dvs;
pub mod folder;
pub mod idx;
pub mod image;
pub mod loader;
pub mod sets;

use std::io;
use std::path::{Path, PathBuf};

pub use augment::{AugmentConfig, Cutout, DvsAugment, MixConfig, RandomCrop, RandomResizedCrop};
pub use autoaugment::AutoAugmentPolicy;
pub use loader::{epoch_order, Batch, BatchLoader, EpochBatches, LoaderConfig};

/// The whole file at `path`, refused (without reading further) when it is longer than `max`
/// bytes: image and event files are read whole, so a huge file must not exhaust memory.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, DataError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| DataError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            reason: format!("file larger than {max} bytes"),
        });
    }
    Ok(bytes)
}

/// Where Debian's `dataset-fashion-mnist` installs the Fashion-MNIST idx files.
pub const DEFAULT_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Number of classes of MNIST and Fashion-MNIST; every label must be below it.
pub const NUM_CLASSES: usize = 10;

/// Most channels an image may have (grey, DVS polarity pair, RGB).
pub const MAX_CHANNELS: usize = 3;

/// Most classes a dataset may have (labels are `u16`).
pub const MAX_CLASSES: usize = 1 << 16;

/// Errors of the data module. Every variant that concerns a file carries its path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file does not exist (when looked up by standard name: neither the raw nor the `.gz`
    /// file exists, and the path is the raw name).
    #[error(
        "{}: missing file{}",
        path.display(),
        if *also_tried_gz { " (nor its .gz variant)" } else { "" }
    )]
    MissingFile {
        /// The file (raw name when looked up by standard name).
        path: PathBuf,
        /// Whether the `.gz` name was tried too.
        also_tried_gz: bool,
    },
    /// Opening or reading the file failed.
    #[error("{}: read error: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The gzip stream is corrupt or ends early.
    #[error("{}: gzip decompression failed (corrupt or truncated archive): {source}", path.display())]
    Decompress {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: io::Error,
    },
    /// The magic number is not the one of this kind of idx file.
    #[error("{}: bad magic 0x{found:08x}, expected 0x{expected:08x}", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The expected magic.
        expected: u32,
        /// The magic found.
        found: u32,
    },
    /// The file (after decompression) is shorter than its header says.
    #[error("{}: truncated {what}: expected {expected} bytes, found {found}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// `"header"` or `"data"`.
        what: &'static str,
        /// Expected total length in bytes (decompressed).
        expected: u64,
        /// Length found (decompressed).
        found: u64,
    },
    /// The file (after decompression) is longer than its header says.
    #[error("{}: trailing bytes after the {expected} bytes the header announces", path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Expected total length in bytes (decompressed).
        expected: u64,
    },
    /// Dimensions that cannot be used (zero height/width, overflow, or not the expected ones).
    #[error("{}: bad dimensions: {reason}", path.display())]
    BadDims {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A label is not below [`NUM_CLASSES`].
    #[error("{}: label {value} at index {index} is not below {num_classes}", path.display())]
    BadLabel {
        /// The labels file.
        path: PathBuf,
        /// Index of the first bad label.
        index: usize,
        /// Its value.
        value: u32,
        /// The number of classes.
        num_classes: usize,
    },
    /// The images and labels files disagree on the number of samples.
    #[error(
        "{}: {labels} labels, but {} has {images} images",
        labels_path.display(),
        images_path.display()
    )]
    CountMismatch {
        /// The images file.
        images_path: PathBuf,
        /// Number of images.
        images: usize,
        /// The labels file.
        labels_path: PathBuf,
        /// Number of labels.
        labels: usize,
    },
    /// A published archive's MD5 is not the known one (a different or damaged download).
    #[error("{}: MD5 {found}, expected {expected} (not the official archive, or a damaged download: delete it and download it again)", path.display())]
    Checksum {
        /// The archive.
        path: PathBuf,
        /// The known checksum.
        expected: String,
        /// The checksum of the file.
        found: String,
    },
    /// The content is not what the format allows (wrong size of a record file, a missing archive
    /// member, a malformed event packet or annotation line, …).
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file (or directory).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An image file cannot be decoded (corrupt, truncated, unsupported, or absurdly large).
    #[error("{}: cannot decode image: {reason}", path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// In-memory arrays given to [`Dataset::new`] are inconsistent.
    #[error("invalid dataset: {0}")]
    InvalidDataset(String),
    /// A loader setting is unusable (e.g. batch size 0).
    #[error("invalid loader config: {0}")]
    InvalidConfig(String),
    /// The loader's worker thread could not be started.
    #[error("cannot start the loader thread: {0}")]
    LoaderSpawn(io::Error),
}

/// Training or test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// 60 000 training samples (`train-*`).
    Train,
    /// 10 000 test samples (`t10k-*`).
    Test,
}

impl Split {
    /// Standard (uncompressed) names of the images and labels files.
    pub fn file_names(self) -> (&'static str, &'static str) {
        match self {
            Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        }
    }
}

/// Which dataset the files hold; it fixes the normalisation constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Fashion-MNIST (Zalando).
    FashionMnist,
    /// MNIST (LeCun et al.).
    Mnist,
}

impl DatasetKind {
    /// The usual per-dataset mean and std of pixel values scaled to `[0, 1]`.
    pub fn normalization(self) -> Normalization {
        match self {
            DatasetKind::FashionMnist => Normalization::FASHION_MNIST,
            DatasetKind::Mnist => Normalization::MNIST,
        }
    }
}

/// `x ↦ (x / 255 − mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Mean of the pixel values in `[0, 1]`.
    pub mean: f32,
    /// Standard deviation of the pixel values in `[0, 1]`.
    pub std: f32,
}

impl Normalization {
    /// Fashion-MNIST: mean 0.2860, std 0.3530.
    pub const FASHION_MNIST: Normalization = Normalization {
        mean: empf_core::PixelNorm::FASHION_MNIST.mean,
        std: empf_core::PixelNorm::FASHION_MNIST.std,
    };
    /// MNIST: mean 0.1307, std 0.3081.
    pub const MNIST: Normalization = Normalization {
        mean: empf_core::PixelNorm::MNIST.mean,
        std: empf_core::PixelNorm::MNIST.std,
    };
    /// Identity on `[0, 1]` (only scales by 1/255).
    pub const UNIT: Normalization = Normalization {
        mean: 0.0,
        std: 1.0,
    };

    /// One pixel, computed as `(x / 255 − mean) / std` in `f32` — by `empf-core`, so training,
    /// export calibration, edge inference and firmware share one definition.
    pub fn apply(&self, pixel: u8) -> f32 {
        self.pixel_norm().apply(pixel)
    }

    /// The same transform as `empf-core`'s type.
    pub fn pixel_norm(&self) -> empf_core::PixelNorm {
        empf_core::PixelNorm {
            mean: self.mean,
            std: self.std,
        }
    }

    /// Table of [`Normalization::apply`] for all 256 pixel values.
    pub fn table(&self) -> [f32; 256] {
        let mut t = [0.0f32; 256];
        for (v, slot) in (0u8..=255).zip(t.iter_mut()) {
            *slot = self.apply(v);
        }
        t
    }

    /// Normalises `src` into `dst` element-wise over the common length.
    pub fn normalize_into(&self, src: &[u8], dst: &mut [f32]) {
        let t = self.table();
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = t[usize::from(s)];
        }
    }

    /// Normalises `src` into a new vector.
    pub fn normalize(&self, src: &[u8]) -> Vec<f32> {
        let t = self.table();
        src.iter().map(|&s| t[usize::from(s)]).collect()
    }
}

/// Per-channel `x ↦ (x / 255 − mean_c) / std_c`; each channel's value is computed exactly as
/// [`Normalization::apply`] computes it, so a 1-channel set normalises bit-identically to the
/// single-channel type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelNorm {
    /// Mean per channel of the pixel values in `[0, 1]` (unused channels ignored).
    pub mean: [f32; MAX_CHANNELS],
    /// Standard deviation per channel.
    pub std: [f32; MAX_CHANNELS],
}

impl ChannelNorm {
    /// CIFAR-10 training-set statistics (mean 0.4914, 0.4822, 0.4465; std 0.2470, 0.2435,
    /// 0.2616: the per-pixel std over all 50 000 images, not the often-copied 0.2023, 0.1994,
    /// 0.2010, which is a mean of per-image stds).
    pub const CIFAR10: ChannelNorm = ChannelNorm {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };
    /// CIFAR-100 training-set statistics.
    pub const CIFAR100: ChannelNorm = ChannelNorm {
        mean: [0.5071, 0.4865, 0.4409],
        std: [0.2673, 0.2564, 0.2762],
    };
    /// ImageNet (torchvision's constants; also used for Tiny-ImageNet).
    pub const IMAGENET: ChannelNorm = ChannelNorm {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    /// Only scales by 1/255.
    pub const UNIT: ChannelNorm = ChannelNorm {
        mean: [0.0; MAX_CHANNELS],
        std: [1.0; MAX_CHANNELS],
    };

    /// The single-channel transform of channel `c` (channel 0 past the end).
    pub fn channel(&self, c: usize) -> Normalization {
        let c = if c < MAX_CHANNELS { c } else { 0 };
        Normalization {
            mean: self.mean[c],
            std: self.std[c],
        }
    }

    /// One 256-entry table per channel.
    pub fn tables(&self) -> [[f32; 256]; MAX_CHANNELS] {
        [
            self.channel(0).table(),
            self.channel(1).table(),
            self.channel(2).table(),
        ]
    }

    /// Normalises a CHW image (`plane` = H·W values per channel) into `dst`, channel by channel.
    pub fn normalize_chw_into(&self, src: &[u8], plane: usize, dst: &mut [f32]) {
        let tables = self.tables();
        for (c, (d, s)) in dst
            .chunks_mut(plane.max(1))
            .zip(src.chunks(plane.max(1)))
            .enumerate()
        {
            let t = &tables[c.min(MAX_CHANNELS - 1)];
            for (d, &s) in d.iter_mut().zip(s) {
                *d = t[usize::from(s)];
            }
        }
    }

    /// [`ChannelNorm::normalize_chw_into`] into a new vector.
    pub fn normalize_chw(&self, src: &[u8], plane: usize) -> Vec<f32> {
        let mut v = vec![0.0; src.len()];
        self.normalize_chw_into(src, plane, &mut v);
        v
    }

    /// Whether every mean is finite and every std finite and non-zero.
    pub fn is_valid(&self) -> bool {
        self.mean.iter().all(|m| m.is_finite())
            && self.std.iter().all(|s| s.is_finite() && *s != 0.0)
    }
}

impl From<Normalization> for ChannelNorm {
    /// The same mean and std in every channel.
    fn from(n: Normalization) -> Self {
        ChannelNorm {
            mean: [n.mean; MAX_CHANNELS],
            std: [n.std; MAX_CHANNELS],
        }
    }
}

/// What one sample looks like once the loader has made it: `frames × channels × height × width`
/// (`frames == 1` for images), and how many classes its label ranges over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleShape {
    /// Channels (1, 2 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Time frames (1 for a static image; T for integrated event data).
    pub frames: usize,
    /// Number of classes; every label is below it.
    pub classes: usize,
}

impl SampleShape {
    /// Values per frame (`C·H·W`).
    pub fn frame_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Values per sample (`T·C·H·W`).
    pub fn sample_len(&self) -> usize {
        self.frames * self.frame_len()
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=MAX_CHANNELS).contains(&self.channels) {
            return Err(format!("{} channels (1 to {MAX_CHANNELS})", self.channels));
        }
        if self.height == 0 || self.width == 0 || self.frames == 0 {
            return Err(format!(
                "image size {}x{} with {} frame(s) has a zero side",
                self.height, self.width, self.frames
            ));
        }
        if self.classes == 0 || self.classes > MAX_CLASSES {
            return Err(format!("{} classes (1 to {MAX_CLASSES})", self.classes));
        }
        // The loader allocates `B · sample_len` floats; keep one sample well below 2^31 values.
        let len = [self.channels, self.height, self.width, self.frames]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= 1 << 28);
        if len.is_none() {
            return Err(format!(
                "{}x{}x{}x{} values per sample is absurd",
                self.frames, self.channels, self.height, self.width
            ));
        }
        Ok(())
    }
}

/// A decoded `u8` image, planar CHW.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageU8 {
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// `[C][H][W]` pixels.
    pub data: Vec<u8>,
}

impl ImageU8 {
    /// A black image.
    pub fn zeros(channels: usize, height: usize, width: usize) -> Self {
        ImageU8 {
            channels,
            height,
            width,
            data: vec![0; channels * height * width],
        }
    }

    /// Channel `c`'s plane.
    pub fn plane(&self, c: usize) -> &[u8] {
        let n = self.height * self.width;
        &self.data[c * n..(c + 1) * n]
    }

    /// Channel `c`'s plane, mutable.
    pub fn plane_mut(&mut self, c: usize) -> &mut [u8] {
        let n = self.height * self.width;
        &mut self.data[c * n..(c + 1) * n]
    }
}

/// What a [`SampleSource`] hands the loader for one sample, before augmentation.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSample {
    /// A `u8` image of any size (the loader fits it to the source's [`SampleShape`]).
    Image(ImageU8),
    /// Integrated event frames, `[T][C][H][W]` in the source's shape exactly.
    Frames(Vec<f32>),
}

/// Anything the loader can draw samples from: in memory ([`Dataset`]) or decoded on demand in the
/// loader's workers (image folders, event files).
pub trait SampleSource: Send + Sync + std::fmt::Debug {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The shape the loader makes every sample into.
    fn shape(&self) -> SampleShape;
    /// Label of sample `i` (`< shape().classes`), or `None` past the end.
    fn label(&self, i: usize) -> Option<u16>;
    /// Loads sample `i` (`i < len()`); an error names the file that failed.
    fn load(&self, i: usize) -> Result<RawSample, DataError>;
    /// Class names in label order, when the dataset ships them.
    fn class_names(&self) -> Option<&[String]> {
        None
    }
}

/// A validated set of `u8` images with labels, in memory.
///
/// Invariants (checked by every constructor): `images.len() == len · C · H · W` (CHW per image),
/// `labels.len() == len`, `1 ≤ C ≤ 3`, `H, W > 0`, every label `< classes ≤ 65 536`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<u16>,
    channels: usize,
    height: usize,
    width: usize,
    classes: usize,
    class_names: Option<Vec<String>>,
}

impl Dataset {
    /// Builds a 1-channel, [`NUM_CLASSES`]-class dataset from in-memory arrays (`images` is
    /// N × height × width, row-major) — the MNIST shape.
    pub fn new(
        images: Vec<u8>,
        labels: Vec<u8>,
        height: usize,
        width: usize,
    ) -> Result<Self, DataError> {
        let labels = labels.into_iter().map(u16::from).collect();
        Self::with_shape(images, labels, 1, height, width, NUM_CLASSES)
    }

    /// Builds a dataset of `channels`-channel images (`images` is N × C × H × W) whose labels are
    /// below `classes`.
    pub fn with_shape(
        images: Vec<u8>,
        labels: Vec<u16>,
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    ) -> Result<Self, DataError> {
        let shape = SampleShape {
            channels,
            height,
            width,
            frames: 1,
            classes,
        };
        shape.check().map_err(DataError::InvalidDataset)?;
        let expected = labels.len().checked_mul(shape.frame_len());
        if expected != Some(images.len()) {
            return Err(DataError::InvalidDataset(format!(
                "{} image bytes for {} labels of {channels}x{height}x{width}",
                images.len(),
                labels.len()
            )));
        }
        if let Some((index, &value)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= classes)
        {
            return Err(DataError::InvalidDataset(format!(
                "label {value} at index {index} is not below {classes}"
            )));
        }
        Ok(Dataset {
            images,
            labels,
            channels,
            height,
            width,
            classes,
            class_names: None,
        })
    }

    /// Attaches class names (one per class, in label order).
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self, DataError> {
        if names.len() != self.classes {
            return Err(DataError::InvalidDataset(format!(
                "{} class names for {} classes",
                names.len(),
                self.classes
            )));
        }
        self.class_names = Some(names);
        Ok(self)
    }

    /// Loads one split from `dir` (each file raw or `.gz`), with full validation.
    pub fn load(dir: &Path, split: Split) -> Result<Self, DataError> {
        let (images_name, labels_name) = split.file_names();
        let images_path = idx::find_file(dir, images_name)?;
        let labels_path = idx::find_file(dir, labels_name)?;
        Self::load_files(&images_path, &labels_path)
    }

    /// Loads an images file and a labels file given by path, with full validation.
    pub fn load_files(images_path: &Path, labels_path: &Path) -> Result<Self, DataError> {
        let images = idx::read_idx(images_path, idx::MAGIC_IMAGES)?;
        let labels = idx::read_idx(labels_path, idx::MAGIC_LABELS)?;
        let (n, height, width) = match images.dims[..] {
            [n, h, w] => (n, h, w),
            _ => {
                return Err(DataError::BadDims {
                    path: images_path.to_path_buf(),
                    reason: format!("expected 3 dimensions, found {:?}", images.dims),
                })
            }
        };
        if height == 0 || width == 0 {
            return Err(DataError::BadDims {
                path: images_path.to_path_buf(),
                reason: format!("image size {height}x{width} has a zero side"),
            });
        }
        if labels.data.len() != n {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                images: n,
                labels_path: labels_path.to_path_buf(),
                labels: labels.data.len(),
            });
        }
        if let Some((index, &value)) = labels
            .data
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= NUM_CLASSES)
        {
            return Err(DataError::BadLabel {
                path: labels_path.to_path_buf(),
                index,
                value: value.into(),
                num_classes: NUM_CLASSES,
            });
        }
        Ok(Dataset {
            images: images.data,
            labels: labels.data.into_iter().map(u16::from).collect(),
            channels: 1,
            height,
            width,
            classes: NUM_CLASSES,
            class_names: None,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Channels per image.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Image height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Image width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of classes (every label is below it).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Class names in label order, if known.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// Values per image (`channels · height · width`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// All images, N × C × H × W.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[u16] {
        &self.labels
    }

    /// Image `i` (`[C][H][W]`), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let n = self.image_len();
        self.images
            .get(i.checked_mul(n)?..i.checked_add(1)?.checked_mul(n)?)
    }

    /// Label `i`, or `None` past the end.
    pub fn label(&self, i: usize) -> Option<u16> {
        self.labels.get(i).copied()
    }

    /// The first `n` samples (all of them when `n ≥ len`).
    pub fn truncated(mut self, n: usize) -> Self {
        if n < self.len() {
            self.images.truncate(n * self.image_len());
            self.labels.truncate(n);
        }
        self
    }

    /// Concatenates datasets of the same shape and class count (CIFAR-10's five training
    /// batches). `None` when the list is empty or the shapes differ.
    pub fn concat(parts: Vec<Dataset>) -> Option<Dataset> {
        let mut it = parts.into_iter();
        let mut all = it.next()?;
        for d in it {
            if (d.channels, d.height, d.width, d.classes)
                != (all.channels, all.height, all.width, all.classes)
            {
                return None;
            }
            all.images.extend_from_slice(&d.images);
            all.labels.extend_from_slice(&d.labels);
        }
        Some(all)
    }

    /// Consumes the dataset, returning `(images, labels, height, width)`; images are
    /// N × C × H × W (see [`Dataset::channels`]).
    pub fn into_parts(self) -> (Vec<u8>, Vec<u16>, usize, usize) {
        (self.images, self.labels, self.height, self.width)
    }
}

impl SampleSource for Dataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn shape(&self) -> SampleShape {
        SampleShape {
            channels: self.channels,
            height: self.height,
            width: self.width,
            frames: 1,
            classes: self.classes,
        }
    }

    fn label(&self, i: usize) -> Option<u16> {
        Dataset::label(self, i)
    }

    fn load(&self, i: usize) -> Result<RawSample, DataError> {
        let data = self
            .image(i)
            .ok_or_else(|| DataError::InvalidDataset(format!("sample {i} of {}", self.len())))?
            .to_vec();
        Ok(RawSample::Image(ImageU8 {
            channels: self.channels,
            height: self.height,
            width: self.width,
            data,
        }))
    }

    fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }
}

/// Both splits of a dataset.
#[derive(Debug, Clone)]
pub struct TrainTest {
    /// Training split.
    pub train: Dataset,
    /// Test split.
    pub test: Dataset,
}

/// Loads both splits from `dir` and checks that they have the same image size.
pub fn load_train_test(dir: &Path) -> Result<TrainTest, DataError> {
    let train = Dataset::load(dir, Split::Train)?;
    let test = Dataset::load(dir, Split::Test)?;
    if (train.height, train.width) != (test.height, test.width) {
        let (images_name, _) = Split::Test.file_names();
        return Err(DataError::BadDims {
            path: idx::find_file(dir, images_name).unwrap_or_else(|_| dir.join(images_name)),
            reason: format!(
                "test images are {}x{}, training images {}x{}",
                test.height, test.width, train.height, train.width
            ),
        });
    }
    Ok(TrainTest { train, test })
}

#[cfg(test)]
mod tests {
    use super::idx::encode_idx;
    use super::*;
    use std::io::Write;

    fn write_raw(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write fixture");
        path
    }

    fn write_gz(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(format!("{name}.gz"));
        let file = std::fs::File::create(&path).expect("create fixture");
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        enc.write_all(bytes).expect("write gz");
        enc.finish().expect("finish gz");
        path
    }

    /// A tiny dataset: `n` images of 3×2 pixels, pixel value = 10·i + p, label = i % 10.
    fn fixture(n: u32) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..n)
            .flat_map(|i| (0..6u32).map(move |p| ((10 * i + p) % 256) as u8))
            .collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        (encode_idx(&[n, 3, 2], &data), encode_idx(&[n], &labels))
    }

    fn assert_names(err: &DataError, path: &Path) {
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()),
            "error {msg:?} does not name {}",
            path.display()
        );
    }

    #[test]
    fn loads_raw_and_gz_splits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (img, lab) = fixture(7);
        write_raw(dir.path(), "train-images-idx3-ubyte", &img);
        write_gz(dir.path(), "train-labels-idx1-ubyte", &lab);
        let (img_t, lab_t) = fixture(3);
        write_gz(dir.path(), "t10k-images-idx3-ubyte", &img_t);
        write_raw(dir.path(), "t10k-labels-idx1-ubyte", &lab_t);

        let tt = load_train_test(dir.path()).expect("loads");
        assert_eq!(tt.train.len(), 7);
        assert_eq!(tt.test.len(), 3);
        assert_eq!((tt.train.height(), tt.train.width()), (3, 2));
        assert_eq!(tt.train.image(1), Some(&[10, 11, 12, 13, 14, 15][..]));
        assert_eq!(tt.train.image(7), None);
        assert_eq!(tt.test.labels(), &[0, 1, 2]);
        assert_eq!(tt.test.images().len(), 18);
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (img, _) = fixture(2);
        write_raw(dir.path(), "train-images-idx3-ubyte", &img);
        let err = Dataset::load(dir.path(), Split::Train).expect_err("labels missing");
        assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
        assert_names(&err, &dir.path().join("train-labels-idx1-ubyte"));
    }

    #[test]
    fn truncated_files_are_named_raw_and_gz() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (img, lab) = fixture(4);
        let img_path = write_raw(dir.path(), "a-images", &img[..img.len() - 1]);
        let lab_path = write_raw(dir.path(), "a-labels", &lab);
        let err = Dataset::load_files(&img_path, &lab_path).expect_err("truncated");
        assert!(
            matches!(err, DataError::Truncated { what: "data", .. }),
            "{err}"
        );
        assert_names(&err, &img_path);

        // Valid gzip of a truncated idx stream.
        let img_gz = write_gz(dir.path(), "b-images", &img[..10]);
        let err = Dataset::load_files(&img_gz, &lab_path).expect_err("truncated");
        assert!(
            matches!(err, DataError::Truncated { what: "header", .. }),
            "{err}"
        );
        assert_names(&err, &img_gz);

        // A gzip archive cut in the middle.
        let good_gz = write_gz(dir.path(), "c-images", &img);
        let gz_bytes = std::fs::read(&good_gz).expect("read");
        let cut_gz = dir.path().join("d-images.gz");
        std::fs::write(&cut_gz, &gz_bytes[..gz_bytes.len() / 2]).expect("write");
        let err = Dataset::load_files(&cut_gz, &lab_path).expect_err("cut archive");
        assert!(matches!(err, DataError::Decompress { .. }), "{err}");
        assert_names(&err, &cut_gz);
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (img, mut lab) = fixture(4);
        lab.push(0);
        let img_path = write_raw(dir.path(), "images", &img);
        let lab_path = write_gz(dir.path(), "labels", &lab);
        let err = Dataset::load_files(&img_path, &lab_path).expect_err("trailing");
        assert!(matches!(err, DataError::TrailingBytes { .. }), "{err}");
        assert_names(&err, &lab_path);
    }

    #[test]
    fn wrong_magic_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (img, lab) = fixture(4);
        // Labels file given where images are expected, and vice versa.
        let img_path = write_raw(dir.path(), "images", &lab);
        let lab_path = write_raw(dir.path(), "labels", &img);
        let err = Dataset::load_files(&img_path, &lab_path).expect_err("magic");
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    expected: 0x803,
                    found: 0x801,
                    ..
                }
            ),
            "{err}"
        );
        assert_names(&err, &img_path);
        let img_path = write_raw(dir.path(), "images2", &img);
        let err = Dataset::load_files(&img_path, &lab_path).expect_err("magic");
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    expected: 0x801,
                    found: 0x803,
                    ..
                }
            ),
            "{err}"
        );
        assert_names(&err, &lab_path);
    }

    #[test]
    fn label_count_mismatch_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (img, _) = fixture(4);
        let (_, lab) = fixture(5);
        let img_path = write_raw(dir.path(), "images", &img);
        let lab_path = write_raw(dir.path(), "labels", &lab);
        let err = Dataset::load_files(&img_path, &lab_path).expect_err("count");
        assert!(
            matches!(
                err,
                DataError::CountMismatch {
                    images: 4,
                    labels: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert_names(&err, &lab_path);
        assert_names(&err, &img_path);
    }

    #[test]
    fn bad_label_value_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (img, _) = fixture(4);
        let img_path = write_raw(dir.path(), "images", &img);
        let lab_path = write_raw(dir.path(), "labels", &encode_idx(&[4], &[0, 9, 10, 3]));
        let err = Dataset::load_files(&img_path, &lab_path).expect_err("label");
        assert!(
            matches!(
                err,
                DataError::BadLabel {
                    index: 2,
                    value: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert_names(&err, &lab_path);
    }

    #[test]
    fn zero_sized_images_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img_path = write_raw(dir.path(), "images", &encode_idx(&[2, 0, 5], &[]));
        let lab_path = write_raw(dir.path(), "labels", &encode_idx(&[2], &[1, 2]));
        let err = Dataset::load_files(&img_path, &lab_path).expect_err("dims");
        assert!(matches!(err, DataError::BadDims { .. }), "{err}");
        assert_names(&err, &img_path);
    }

    #[test]
    fn dataset_new_validates() {
        assert!(Dataset::new(vec![0; 12], vec![1, 2], 3, 2).is_ok());
        assert!(Dataset::new(vec![0; 11], vec![1, 2], 3, 2).is_err());
        assert!(Dataset::new(vec![0; 12], vec![1, 10], 3, 2).is_err());
        assert!(Dataset::new(vec![], vec![], 0, 2).is_err());
        assert!(Dataset::new(vec![0; 12], vec![1, 2], usize::MAX, 2).is_err());
    }

    #[test]
    fn normalization_matches_formula() {
        let n = Normalization::FASHION_MNIST;
        assert_eq!(n.apply(0), -0.2860 / 0.3530);
        assert!((n.apply(255) - (1.0 - 0.2860) / 0.3530).abs() < 1e-6);
        let m = DatasetKind::Mnist.normalization();
        assert_eq!((m.mean, m.std), (0.1307, 0.3081));
        let v = m.normalize(&[0, 128, 255]);
        for (x, p) in v.iter().zip([0u8, 128, 255]) {
            let expect = (f64::from(p) / 255.0 - 0.1307) / 0.3081;
            assert!((f64::from(*x) - expect).abs() < 1e-5);
        }
    }

    /// Loads the real Fashion-MNIST files from the Debian package when they are installed.
    #[test]
    fn loads_debian_fashion_mnist_if_present() {
        let dir = Path::new(DEFAULT_FASHION_MNIST_DIR);
        if !dir.is_dir() {
            println!(
                "skipped: {DEFAULT_FASHION_MNIST_DIR} not found (Debian package dataset-fashion-mnist not installed)"
            );
            return;
        }
        let tt = load_train_test(dir).expect("Debian Fashion-MNIST loads");
        assert_eq!(tt.train.len(), 60_000);
        assert_eq!(tt.test.len(), 10_000);
        assert_eq!((tt.train.height(), tt.train.width()), (28, 28));
        assert_eq!((tt.test.height(), tt.test.width()), (28, 28));
        // Balanced classes: 6 000 / 1 000 per class.
        for (set, per_class) in [(&tt.train, 6000usize), (&tt.test, 1000)] {
            let mut counts = [0usize; NUM_CLASSES];
            for &l in set.labels() {
                counts[usize::from(l)] += 1;
            }
            assert_eq!(counts, [per_class; NUM_CLASSES]);
        }
        // The published mean/std are those of the training pixels.
        let n = tt.train.images().len() as f64;
        let mean = tt
            .train
            .images()
            .iter()
            .map(|&p| f64::from(p) / 255.0)
            .sum::<f64>()
            / n;
        assert!((mean - 0.2860).abs() < 5e-4, "mean {mean}");
    }
}
