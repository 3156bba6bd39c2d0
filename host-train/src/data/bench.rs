//! Loader throughput: how many finished samples per second a [`BatchLoader`] delivers when the
//! consumer does nothing else (the upper bound it puts on training speed).

use std::sync::Arc;
use std::time::Instant;

use super::{BatchLoader, DataError, Dataset, SampleShape};
use crate::rng::Rng;

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderThroughput {
    /// Samples delivered.
    pub images: usize,
    /// Batches delivered.
    pub batches: usize,
    /// Wall time from starting the epoch to the last batch, seconds.
    pub seconds: f64,
    /// `images / seconds`.
    pub images_per_second: f64,
    /// Worker threads of the loader.
    pub workers: usize,
}

/// Runs epoch `epoch` of `loader` for at most `max_batches` batches (all when `None`) and
/// reports the rate; the first error of the epoch is returned as it is.
pub fn loader_images_per_second(
    loader: &BatchLoader,
    epoch: u64,
    max_batches: Option<usize>,
) -> Result<LoaderThroughput, DataError> {
    let started = Instant::now();
    let (mut images, mut batches) = (0usize, 0usize);
    let limit = max_batches.unwrap_or(usize::MAX);
    for batch in loader.epoch(epoch)?.take(limit) {
        let batch = batch?;
        images += batch.len();
        batches += 1;
        // Touch the data so that nothing is optimised away.
        std::hint::black_box(&batch.images);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(LoaderThroughput {
        images,
        batches,
        seconds,
        images_per_second: if seconds > 0.0 {
            images as f64 / seconds
        } else {
            0.0
        },
        workers: loader.config().workers,
    })
}

/// `n` uniformly random `u8` images of `shape` (frames ignored) with random labels: a stand-in
/// dataset for benchmarking the loader where the real files are absent.
pub fn synthetic_dataset(
    shape: SampleShape,
    n: usize,
    seed: u64,
) -> Result<Arc<Dataset>, DataError> {
    let mut rng = Rng::for_stream(seed, 0x10AD);
    let len = n
        .checked_mul(shape.frame_len())
        .ok_or_else(|| DataError::InvalidConfig(format!("{n} synthetic images of {shape:?}")))?;
    let images = (0..len).map(|_| (rng.next_u32() >> 24) as u8).collect();
    let labels = (0..n)
        .map(|_| rng.below(shape.classes as u64) as u16)
        .collect();
    Ok(Arc::new(Dataset::with_shape(
        images,
        labels,
        shape.channels,
        shape.height,
        shape.width,
        shape.classes,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{AugmentConfig, ChannelNorm, LoaderConfig};

    fn cifar_shape() -> SampleShape {
        SampleShape {
            channels: 3,
            height: 32,
            width: 32,
            frames: 1,
            classes: 10,
        }
    }

    #[test]
    fn counts_what_it_delivers() {
        let ds = synthetic_dataset(cifar_shape(), 50, 1).unwrap();
        let loader = BatchLoader::new(
            ds,
            LoaderConfig {
                workers: 2,
                augment: AugmentConfig::cifar(16),
                ..LoaderConfig::new(8, 0, ChannelNorm::CIFAR10)
            },
        )
        .unwrap();
        let all = loader_images_per_second(&loader, 0, None).unwrap();
        assert_eq!((all.images, all.batches, all.workers), (50, 7, 2));
        assert!(all.images_per_second > 0.0);
        let some = loader_images_per_second(&loader, 0, Some(3)).unwrap();
        assert_eq!((some.images, some.batches), (24, 3));
    }

    /// Throughput table (release build): `cargo test --release -p empf-host-train --lib
    /// loader_throughput_table -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark; run by hand in a release build"]
    fn loader_throughput_table() {
        let fashion = SampleShape {
            channels: 1,
            height: 28,
            width: 28,
            frames: 1,
            classes: 10,
        };
        let cases = [
            ("fashion-mnist, none", fashion, AugmentConfig::none()),
            (
                "fashion-mnist, crop4+flip+cutout",
                fashion,
                AugmentConfig::parse("crop=4,flip,cutout=1x8").unwrap(),
            ),
            ("cifar, none", cifar_shape(), AugmentConfig::none()),
            (
                "cifar, paper preset",
                cifar_shape(),
                AugmentConfig::cifar(16),
            ),
        ];
        let max = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (name, shape, aug) in cases {
            let ds = synthetic_dataset(shape, 20_000, 7).unwrap();
            for workers in [1, max] {
                let loader = BatchLoader::new(
                    ds.clone(),
                    LoaderConfig {
                        workers,
                        prefetch: 2 * workers,
                        augment: aug.clone(),
                        ..LoaderConfig::new(64, 0, ChannelNorm::CIFAR10)
                    },
                )
                .unwrap();
                let r = loader_images_per_second(&loader, 0, None).unwrap();
                println!(
                    "{name:<36} workers {workers}: {:>9.0} images/s",
                    r.images_per_second
                );
            }
        }
        // JPEG decoding: a Tiny-ImageNet-shaped tree of 64×64 JPEGs, the paper's preset.
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("tiny-imagenet-200");
        let wnids: Vec<String> = (0..8).map(|k| format!("n{k:08}")).collect();
        std::fs::create_dir_all(t.join("val/images")).unwrap();
        std::fs::write(t.join("wnids.txt"), wnids.join("\n")).unwrap();
        let mut rng = Rng::seed_from_u64(3);
        for w in &wnids {
            let d = t.join("train").join(w).join("images");
            std::fs::create_dir_all(&d).unwrap();
            for j in 0..128 {
                let rgb: Vec<u8> = (0..64 * 64 * 3)
                    .map(|i| ((i / 3 % 64) as u32 * 3 + rng.next_u32() % 40) as u8)
                    .collect();
                let mut out = Vec::new();
                jpeg_encoder::Encoder::new(&mut out, 90)
                    .encode(&rgb, 64, 64, jpeg_encoder::ColorType::Rgb)
                    .unwrap();
                std::fs::write(d.join(format!("{w}_{j}.JPEG")), out).unwrap();
            }
        }
        let src: Arc<dyn crate::data::SampleSource> = Arc::new(
            crate::data::folder::ImageFolder::tiny_imagenet(&t, crate::data::Split::Train, 64)
                .unwrap(),
        );
        for (name, aug) in [
            ("tiny-imagenet jpeg, none", AugmentConfig::none()),
            (
                "tiny-imagenet jpeg, paper preset",
                AugmentConfig::tiny_imagenet(),
            ),
        ] {
            for workers in [1, max] {
                let loader = BatchLoader::from_source(
                    src.clone(),
                    LoaderConfig {
                        workers,
                        prefetch: 2 * workers,
                        augment: aug.clone(),
                        ..LoaderConfig::new(64, 0, ChannelNorm::IMAGENET)
                    },
                )
                .unwrap();
                let r = loader_images_per_second(&loader, 0, None).unwrap();
                println!(
                    "{name:<36} workers {workers}: {:>9.0} images/s",
                    r.images_per_second
                );
            }
        }
    }
}
