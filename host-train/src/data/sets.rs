//! One entry point per data set for the command line: where its files are looked for, its
//! normalisation, the paper's augmentation, and its sample source.

use std::path::Path;
use std::sync::Arc;

use super::cifar::{self, CifarKind};
use super::dvs::CifarDvs;
use super::folder::ImageFolder;
use super::{AugmentConfig, ChannelNorm, DataError, Dataset, Normalization, SampleSource, Split};

/// The data sets the trainer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataSet {
    /// Fashion-MNIST idx files (1×28×28, 10 classes).
    FashionMnist,
    /// MNIST idx files.
    Mnist,
    /// CIFAR-10 binary (3×32×32, 10 classes).
    Cifar10,
    /// CIFAR-100 binary (fine labels, 100 classes).
    Cifar100,
    /// Tiny-ImageNet (3×64×64, 200 classes).
    TinyImageNet,
    /// ImageNet-1k (3×224×224, 1000 classes).
    ImageNet,
    /// CIFAR10-DVS (T×2×48×48, 10 classes).
    Cifar10Dvs,
}

/// Options of [`open`] that only some sets use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Output side for image folders (64 Tiny-ImageNet, 224 ImageNet) and DVS frames (48).
    pub image_size: usize,
    /// Frames per DVS sample (T = 10 in the paper).
    pub frames: usize,
}

impl DataSet {
    /// Per-channel normalisation of the set's `u8` images (DVS frames are not normalised).
    pub fn normalization(self) -> ChannelNorm {
        match self {
            DataSet::FashionMnist => Normalization::FASHION_MNIST.into(),
            DataSet::Mnist => Normalization::MNIST.into(),
            DataSet::Cifar10 => ChannelNorm::CIFAR10,
            DataSet::Cifar100 => ChannelNorm::CIFAR100,
            DataSet::TinyImageNet | DataSet::ImageNet => ChannelNorm::IMAGENET,
            DataSet::Cifar10Dvs => ChannelNorm::UNIT,
        }
    }

    /// The paper's training augmentation (spec §6); Fashion-MNIST/MNIST: none.
    pub fn paper_augment(self) -> AugmentConfig {
        match self {
            DataSet::FashionMnist | DataSet::Mnist => AugmentConfig::none(),
            DataSet::Cifar10 => AugmentConfig::cifar(16),
            DataSet::Cifar100 => AugmentConfig::cifar(8),
            DataSet::TinyImageNet => AugmentConfig::tiny_imagenet(),
            DataSet::ImageNet => AugmentConfig::imagenet(),
            DataSet::Cifar10Dvs => AugmentConfig::dvs(),
        }
    }

    /// The paper's options: image size and frames.
    pub fn default_options(self) -> OpenOptions {
        let image_size = match self {
            DataSet::FashionMnist | DataSet::Mnist => 28,
            DataSet::Cifar10 | DataSet::Cifar100 => 32,
            DataSet::TinyImageNet => 64,
            DataSet::ImageNet => 224,
            DataSet::Cifar10Dvs => 48,
        };
        let frames = if self == DataSet::Cifar10Dvs { 10 } else { 1 };
        OpenOptions { image_size, frames }
    }
}

/// Opens one split of `set` from `dir` (see each module for the files looked for). In-memory
/// sets (idx, CIFAR) are loaded now; folders and event files are listed now and decoded by the
/// loader's workers. CIFAR from the archive streams it once per call: load both splits with
/// [`open_train_test`] to read it once.
pub fn open(
    set: DataSet,
    dir: &Path,
    split: Split,
    opts: OpenOptions,
) -> Result<Arc<dyn SampleSource>, DataError> {
    Ok(match set {
        DataSet::FashionMnist | DataSet::Mnist => Arc::new(Dataset::load(dir, split)?),
        DataSet::Cifar10 => Arc::new(cifar::load(dir, CifarKind::Cifar10, split)?),
        DataSet::Cifar100 => Arc::new(cifar::load(dir, CifarKind::Cifar100, split)?),
        DataSet::TinyImageNet => Arc::new(ImageFolder::tiny_imagenet(dir, split, opts.image_size)?),
        DataSet::ImageNet => Arc::new(ImageFolder::imagenet(dir, split, opts.image_size)?),
        DataSet::Cifar10Dvs => Arc::new(CifarDvs::new(dir, split, opts.frames, opts.image_size)?),
    })
}

/// A shared sample source.
pub type Source = Arc<dyn SampleSource>;

/// The first `n` samples of `source` (all of them for `None` or `n ≥ len`): `--limit-train` /
/// `--limit-test` for any data set.
pub fn limited(source: Source, n: Option<usize>) -> Source {
    match n {
        Some(n) if n < source.len() => Arc::new(Limited {
            inner: source,
            len: n,
        }),
        _ => source,
    }
}

/// A prefix of another source.
#[derive(Debug)]
struct Limited {
    inner: Source,
    len: usize,
}

impl SampleSource for Limited {
    fn len(&self) -> usize {
        self.len
    }

    fn shape(&self) -> super::SampleShape {
        self.inner.shape()
    }

    fn label(&self, i: usize) -> Option<u16> {
        if i < self.len {
            self.inner.label(i)
        } else {
            None
        }
    }

    fn load(&self, i: usize) -> Result<super::RawSample, DataError> {
        if i >= self.len {
            return Err(DataError::InvalidConfig(format!(
                "sample {i} is past the first {} (--limit)",
                self.len
            )));
        }
        self.inner.load(i)
    }
}

/// Both splits (a CIFAR archive is streamed once for both).
pub fn open_train_test(
    set: DataSet,
    dir: &Path,
    opts: OpenOptions,
) -> Result<(Source, Source), DataError> {
    let kind = match set {
        DataSet::Cifar10 => Some(CifarKind::Cifar10),
        DataSet::Cifar100 => Some(CifarKind::Cifar100),
        _ => None,
    };
    if let Some(kind) = kind {
        let tt = cifar::load_train_test(dir, kind)?;
        return Ok((Arc::new(tt.train), Arc::new(tt.test)));
    }
    Ok((
        open(set, dir, Split::Train, opts)?,
        open(set, dir, Split::Test, opts)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_missing_dirs_are_named() {
        for set in [
            DataSet::FashionMnist,
            DataSet::Mnist,
            DataSet::Cifar10,
            DataSet::Cifar100,
            DataSet::TinyImageNet,
            DataSet::ImageNet,
            DataSet::Cifar10Dvs,
        ] {
            let o = set.default_options();
            assert!(set.normalization().is_valid());
            assert!(set
                .paper_augment()
                .validate(o.image_size, o.image_size)
                .is_ok());
            let dir = tempfile::tempdir().unwrap();
            let missing = dir.path().join("nothing-here");
            match open_train_test(set, &missing, o) {
                Ok(_) => panic!("{set:?} opened an empty directory"),
                Err(e) => assert!(e.to_string().contains("nothing-here"), "{set:?}: {e}"),
            }
        }
    }
}
