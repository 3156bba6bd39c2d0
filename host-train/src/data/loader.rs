//! Multi-threaded batch loader.
//!
//! `workers` threads assemble batches of normalised `f32` images in layout `[B][C][H][W]`
//! (contiguous, row-major; event data `[T][B][C][H][W]`, so each step's input is one contiguous
//! slice) and hand them over bounded channels, so at most about `prefetch` finished batches wait
//! while the trainer works. Worker `w` makes batches `w, w + N, w + 2N, …` into its own
//! `sync_channel`, and the iterator reads batch `k` from worker `k mod N`: batches arrive in
//! order without a reorder buffer, and a slow batch only holds back its own worker.
//!
//! Order: with `shuffle`, epoch `e` visits the samples in `epoch_order(len, seed, e, true)`, a
//! Fisher–Yates permutation drawn from `Rng::for_stream(seed, e)`; the same seed and epoch always
//! give the same order, on any machine. The last partial batch is kept unless `drop_last`.
//!
//! Augmentation ([`AugmentConfig`]) draws from one generator per sample
//! ([`augment::sample_rng`]: seed, epoch, dataset index) and one per batch
//! ([`augment::batch_rng`]), so every batch is the same for any number of workers.
//!
//! A sample that fails to load (a corrupt image in a lazily decoded set) ends the epoch with that
//! error, naming the file; in-memory sets cannot fail.
//!
//! Dropping an [`EpochBatches`] early is fine: the workers see their closed channels, stop, and
//! the drop joins them.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::augment::{self, AugmentConfig};
use super::{ChannelNorm, DataError, Dataset, ImageU8, RawSample, SampleShape, SampleSource};
use crate::rng::Rng;

/// Loader settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// Shuffle each epoch (else the natural order `0..len`).
    pub shuffle: bool,
    /// Seed of the per-epoch shuffles and of the augmentation.
    pub seed: u64,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Pixel normalisation, per channel (`u8` images only; event frames are used as counts).
    pub normalization: ChannelNorm,
    /// Finished batches that may wait, over all workers (each worker's channel holds
    /// `⌈prefetch / workers⌉`).
    pub prefetch: usize,
    /// Worker threads (≥ 1). The batches do not depend on it.
    pub workers: usize,
    /// Augmentation (training only; [`AugmentConfig::none`] by default).
    pub augment: AugmentConfig,
}

impl LoaderConfig {
    /// Shuffled, last partial batch kept, prefetch 2, one worker, no augmentation.
    pub fn new(batch_size: usize, seed: u64, normalization: impl Into<ChannelNorm>) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            seed,
            drop_last: false,
            normalization: normalization.into(),
            prefetch: 2,
            workers: 1,
            augment: AugmentConfig::none(),
        }
    }
}

/// One batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Epoch this batch belongs to.
    pub epoch: u64,
    /// Position of this batch within its epoch (0-based).
    pub index: usize,
    /// Normalised images, `[B][C][H][W]` contiguous (`B = labels.len()`); with `frames > 1`,
    /// `[T][B][C][H][W]` (see [`Batch::frame`]).
    pub images: Vec<f32>,
    /// Labels, one per image (the class of the unmixed sample).
    pub labels: Vec<u16>,
    /// Soft targets `[B][classes]`, each row summing to 1, when Mixup/CutMix or label smoothing
    /// is on; `None` means one-hot `labels`.
    pub soft_targets: Option<Vec<f32>>,
    /// Dataset indices of the samples, in batch order.
    pub sample_indices: Vec<usize>,
    /// Channels.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Time frames (1 for images).
    pub frames: usize,
    /// Number of classes (width of `soft_targets`).
    pub classes: usize,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch has no samples (never yielded by the loader).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[B, C, H, W]` (of one frame).
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), self.channels, self.height, self.width]
    }

    /// Frame `t`'s `[B][C][H][W]` images (the whole batch for `t = 0` of a static set), or `None`
    /// for `t ≥ frames`.
    pub fn frame(&self, t: usize) -> Option<&[f32]> {
        let n = self.len() * self.channels * self.height * self.width;
        self.images
            .get(t.checked_mul(n)?..t.checked_add(1)?.checked_mul(n)?)
    }
}

/// The order in which epoch `epoch` visits `0..len` (see the module docs).
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    if shuffle {
        Rng::for_stream(seed, epoch).permutation(len)
    } else {
        (0..len).collect()
    }
}

/// Produces the batches of each epoch on background threads.
#[derive(Debug, Clone)]
pub struct BatchLoader {
    source: Arc<dyn SampleSource>,
    config: LoaderConfig,
}

/// Most worker threads a loader starts (more gains nothing on any machine we train on).
pub const MAX_WORKERS: usize = 256;

impl BatchLoader {
    /// A loader over an in-memory dataset; checks the config.
    pub fn new(dataset: Arc<Dataset>, config: LoaderConfig) -> Result<Self, DataError> {
        Self::from_source(dataset, config)
    }

    /// A loader over any source; checks the config (`batch_size > 0`, usable normalisation,
    /// `1 ≤ workers ≤ MAX_WORKERS`, augmentation that fits the image).
    pub fn from_source(
        source: Arc<dyn SampleSource>,
        config: LoaderConfig,
    ) -> Result<Self, DataError> {
        if config.batch_size == 0 {
            return Err(DataError::InvalidConfig("batch_size must be > 0".into()));
        }
        let norm = config.normalization;
        if !norm.is_valid() {
            return Err(DataError::InvalidConfig(format!(
                "normalisation {norm:?} must have finite means and finite non-zero stds"
            )));
        }
        if !(1..=MAX_WORKERS).contains(&config.workers) {
            return Err(DataError::InvalidConfig(format!(
                "workers must be 1 to {MAX_WORKERS}, got {}",
                config.workers
            )));
        }
        let shape = source.shape();
        config
            .augment
            .validate(shape.height, shape.width)
            .map_err(DataError::InvalidConfig)?;
        Ok(BatchLoader { source, config })
    }

    /// The samples' source.
    pub fn source(&self) -> &Arc<dyn SampleSource> {
        &self.source
    }

    /// The shape of every sample in the batches.
    pub fn shape(&self) -> SampleShape {
        self.source.shape()
    }

    /// The config.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches per epoch (counting a partial last batch unless `drop_last`).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.source.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Samples per epoch actually yielded.
    pub fn samples_per_epoch(&self) -> usize {
        if self.config.drop_last {
            self.batches_per_epoch() * self.config.batch_size
        } else {
            self.source.len()
        }
    }

    /// Starts the workers for `epoch` and returns the iterator over its batches.
    pub fn epoch(&self, epoch: u64) -> Result<EpochBatches, DataError> {
        self.epoch_from(epoch, 0)
    }

    /// Like [`BatchLoader::epoch`] but skips the first `start_batch` batches (resuming a
    /// checkpoint taken mid-epoch); batch indices keep their place in the full epoch.
    pub fn epoch_from(&self, epoch: u64, start_batch: usize) -> Result<EpochBatches, DataError> {
        let total = self.batches_per_epoch();
        let start = start_batch.min(total);
        let workers = self.config.workers.min((total - start).max(1));
        let order = Arc::new(epoch_order(
            self.source.len(),
            self.config.seed,
            epoch,
            self.config.shuffle,
        ));
        let capacity = self.config.prefetch.div_ceil(workers);
        let mut batches = EpochBatches {
            rxs: Vec::with_capacity(workers),
            handles: Vec::with_capacity(workers),
            start,
            next: start,
            end: total,
            failed: false,
        };
        for w in 0..workers {
            let (tx, rx) = sync_channel(capacity);
            let job = Job {
                source: Arc::clone(&self.source),
                config: self.config.clone(),
                order: Arc::clone(&order),
                epoch,
            };
            let handle = std::thread::Builder::new()
                .name(format!("empf-loader-e{epoch}-w{w}"))
                .spawn(move || job.run(tx, start + w, total, workers))
                // `batches` drops here: the started workers see closed channels and are joined.
                .map_err(DataError::LoaderSpawn)?;
            batches.rxs.push(rx);
            batches.handles.push(handle);
        }
        Ok(batches)
    }

    /// Makes batch `index` of `epoch` on the calling thread (what a worker sends; for tests and
    /// benchmarks).
    pub fn make_batch(&self, epoch: u64, index: usize) -> Result<Batch, DataError> {
        let order = epoch_order(
            self.source.len(),
            self.config.seed,
            epoch,
            self.config.shuffle,
        );
        let job = Job {
            source: Arc::clone(&self.source),
            config: self.config.clone(),
            order: Arc::new(order),
            epoch,
        };
        job.batch(index)
    }
}

/// What one worker needs.
struct Job {
    source: Arc<dyn SampleSource>,
    config: LoaderConfig,
    order: Arc<Vec<usize>>,
    epoch: u64,
}

impl Job {
    fn run(self, tx: SyncSender<Result<Batch, DataError>>, first: usize, end: usize, step: usize) {
        for index in (first..end).step_by(step) {
            let batch = self.batch(index);
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return; // receiver dropped (stop early), or the epoch ends with this error
            }
        }
    }

    /// Builds batch `index`; its samples are `order[index·B ..][..B]`.
    fn batch(&self, index: usize) -> Result<Batch, DataError> {
        let b = self.config.batch_size;
        let from = index.saturating_mul(b).min(self.order.len());
        let to = from.saturating_add(b).min(self.order.len());
        let indices = &self.order[from..to];
        let shape = self.source.shape();
        let (frame_len, frames) = (shape.frame_len(), shape.frames);
        let tables = self.config.normalization.tables();
        let aug = &self.config.augment;
        let mut images = vec![0.0f32; indices.len() * shape.sample_len()];
        let mut labels = Vec::with_capacity(indices.len());
        let mut sample = vec![0.0f32; shape.sample_len()];
        for (j, &i) in indices.iter().enumerate() {
            let mut rng = augment::sample_rng(self.config.seed, self.epoch, i);
            let label = self.source.label(i).ok_or_else(|| {
                DataError::InvalidDataset(format!(
                    "no label for sample {i} of {}",
                    self.source.len()
                ))
            })?;
            match self.source.load(i)? {
                RawSample::Image(img) => {
                    let img = fit_channels(img, &shape)?;
                    let mut img = aug.fit(img, shape.height, shape.width, &mut rng);
                    aug.apply_u8(&mut img, &mut rng);
                    let plane = shape.height * shape.width;
                    for (c, (dst, src)) in sample
                        .chunks_exact_mut(plane)
                        .zip(img.data.chunks_exact(plane))
                        .enumerate()
                    {
                        let t = &tables[c];
                        for (d, &p) in dst.iter_mut().zip(src) {
                            *d = t[usize::from(p)];
                        }
                    }
                    aug.apply_f32(&mut sample, shape.height, shape.width, &mut rng);
                }
                RawSample::Frames(f) => {
                    if f.len() != sample.len() {
                        return Err(DataError::InvalidDataset(format!(
                            "sample {i} has {} frame values, its source promised {}",
                            f.len(),
                            sample.len()
                        )));
                    }
                    sample.copy_from_slice(&f);
                    aug.apply_f32(&mut sample, shape.height, shape.width, &mut rng);
                }
            }
            // [T][B][C][H][W]: frame t of sample j at (t·B + j)·C·H·W.
            let bsz = indices.len();
            for (t, src) in sample.chunks_exact(frame_len).enumerate() {
                let at = (t * bsz + j) * frame_len;
                images[at..at + frame_len].copy_from_slice(src);
            }
            labels.push(label);
        }
        let soft_targets = aug.soft_targets().then(|| {
            let mut rng = augment::batch_rng(self.config.seed, self.epoch, index);
            augment::mix_batch(
                &mut images,
                &labels,
                shape.classes,
                (shape.channels, shape.height, shape.width),
                aug.mix,
                aug.label_smoothing,
                &mut rng,
            )
        });
        Ok(Batch {
            epoch: self.epoch,
            index,
            images,
            labels,
            soft_targets,
            sample_indices: indices.to_vec(),
            channels: shape.channels,
            height: shape.height,
            width: shape.width,
            frames,
            classes: shape.classes,
        })
    }
}

/// Checks a raw image's channel count (sources decode to their own channel count; the size is
/// fitted by the augmentation config).
fn fit_channels(img: ImageU8, shape: &SampleShape) -> Result<ImageU8, DataError> {
    if img.channels == shape.channels && img.height > 0 && img.width > 0 {
        return Ok(img);
    }
    Err(DataError::InvalidDataset(format!(
        "a {}x{}x{} image in a set of {}-channel images",
        img.channels, img.height, img.width, shape.channels
    )))
}

/// Iterator over one epoch's batches; see [`BatchLoader::epoch`].
#[derive(Debug)]
pub struct EpochBatches {
    rxs: Vec<Receiver<Result<Batch, DataError>>>,
    handles: Vec<JoinHandle<()>>,
    start: usize,
    next: usize,
    end: usize,
    failed: bool,
}

impl Iterator for EpochBatches {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.end || self.rxs.is_empty() {
            return None;
        }
        // Worker w makes batches start + w, start + w + N, …
        let w = (self.next - self.start) % self.rxs.len();
        let item = match self.rxs.get(w)?.recv() {
            Ok(item) => item,
            // A worker that vanished without an error panicked (reported by the panic hook).
            Err(_) => Err(DataError::InvalidConfig(format!(
                "loader worker {w} stopped before batch {}",
                self.next
            ))),
        };
        self.failed = item.is_err();
        self.next += 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.end - self.next.min(self.end)))
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Close the channels first so workers blocked on `send` wake up and exit.
        self.rxs.clear();
        for handle in self.handles.drain(..) {
            // A worker panic has already been reported on stderr by the panic hook.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ChannelNorm, Normalization};

    fn dataset(n: usize) -> Arc<Dataset> {
        let images: Vec<u8> = (0..n * 4).map(|i| (i % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        Arc::new(Dataset::new(images, labels, 2, 2).expect("valid dataset"))
    }

    #[test]
    fn every_sample_exactly_once_per_epoch() {
        let ds = dataset(103);
        let loader = BatchLoader::new(ds.clone(), LoaderConfig::new(10, 42, Normalization::UNIT))
            .expect("loader");
        assert_eq!(loader.batches_per_epoch(), 11);
        for epoch in 0..3 {
            let mut seen = vec![0u32; 103];
            let mut count = 0;
            for (k, b) in loader.epoch(epoch).expect("epoch").enumerate() {
                let b = b.expect("in-memory batches cannot fail");
                assert_eq!(b.index, k);
                assert_eq!(b.epoch, epoch);
                assert_eq!(b.len(), if k < 10 { 10 } else { 3 });
                assert_eq!(b.shape(), [b.len(), 1, 2, 2]);
                assert_eq!(b.images.len(), b.len() * 4);
                for (j, &i) in b.sample_indices.iter().enumerate() {
                    seen[i] += 1;
                    assert_eq!(b.labels[j], ds.labels()[i]);
                    let img = ds.image(i).expect("index in range");
                    for (p, &x) in img.iter().zip(&b.images[j * 4..(j + 1) * 4]) {
                        assert_eq!(x, f32::from(*p) / 255.0);
                    }
                }
                count += 1;
            }
            assert_eq!(count, 11);
            assert!(seen.iter().all(|&c| c == 1), "epoch {epoch}: {seen:?}");
        }
    }

    #[test]
    fn drop_last_drops_the_partial_batch() {
        let mut cfg = LoaderConfig::new(10, 1, Normalization::FASHION_MNIST);
        cfg.drop_last = true;
        let loader = BatchLoader::new(dataset(103), cfg).expect("loader");
        let batches: Vec<Batch> = loader
            .epoch(0)
            .expect("epoch")
            .collect::<Result<_, _>>()
            .expect("batches");
        assert_eq!(batches.len(), 10);
        assert!(batches.iter().all(|b| b.len() == 10));
        assert_eq!(loader.samples_per_epoch(), 100);
        let mut all: Vec<usize> = batches
            .iter()
            .flat_map(|b| b.sample_indices.clone())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 100);
    }

    #[test]
    fn shuffle_is_deterministic_per_seed_and_epoch() {
        let ds = dataset(50);
        let order = |seed, epoch| -> Vec<usize> {
            let loader =
                BatchLoader::new(ds.clone(), LoaderConfig::new(7, seed, Normalization::UNIT))
                    .expect("loader");
            loader
                .epoch(epoch)
                .expect("epoch")
                .flat_map(|b| b.expect("batch").sample_indices)
                .collect()
        };
        assert_eq!(order(42, 0), order(42, 0));
        assert_eq!(order(42, 5), epoch_order(50, 42, 5, true));
        assert_ne!(order(42, 0), order(42, 1));
        assert_ne!(order(42, 0), order(43, 0));
        assert_ne!(order(42, 0), (0..50).collect::<Vec<_>>());
        assert_eq!(epoch_order(5, 42, 0, false), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn unshuffled_and_resumed_epochs() {
        let mut cfg = LoaderConfig::new(4, 0, Normalization::UNIT);
        cfg.shuffle = false;
        cfg.prefetch = 0;
        let loader = BatchLoader::new(dataset(10), cfg).expect("loader");
        let b: Vec<Batch> = loader
            .epoch_from(3, 1)
            .expect("epoch")
            .collect::<Result<_, _>>()
            .expect("batches");
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].index, 1);
        assert_eq!(b[0].sample_indices, [4, 5, 6, 7]);
        assert_eq!(b[1].sample_indices, [8, 9]);
        assert_eq!(loader.epoch_from(0, 99).expect("epoch").count(), 0);
    }

    #[test]
    fn early_drop_does_not_hang() {
        let loader = BatchLoader::new(dataset(1000), LoaderConfig::new(1, 0, Normalization::UNIT))
            .expect("loader");
        let mut it = loader.epoch(0).expect("epoch");
        assert!(it.next().is_some());
        drop(it); // joins the worker, which is blocked on a full channel
    }

    #[test]
    fn empty_dataset_and_bad_config() {
        let empty = Arc::new(Dataset::new(vec![], vec![], 2, 2).expect("empty is valid"));
        let loader = BatchLoader::new(empty.clone(), LoaderConfig::new(3, 0, Normalization::UNIT))
            .expect("loader");
        assert_eq!(loader.epoch(0).expect("epoch").count(), 0);
        assert!(
            BatchLoader::new(empty.clone(), LoaderConfig::new(0, 0, Normalization::UNIT)).is_err()
        );
        let bad = Normalization {
            mean: 0.0,
            std: 0.0,
        };
        assert!(BatchLoader::new(empty, LoaderConfig::new(1, 0, bad)).is_err());
    }

    fn collect(loader: &BatchLoader, epoch: u64) -> Vec<Batch> {
        loader
            .epoch(epoch)
            .expect("epoch")
            .collect::<Result<_, _>>()
            .expect("batches")
    }

    /// 28×28 grey images with structure (so flips and crops change them).
    fn fashion_like(n: usize) -> Arc<Dataset> {
        let images: Vec<u8> = (0..n * 784)
            .map(|i| ((i % 784) * 3 + (i / 784) * 11) as u8)
            .collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        Arc::new(Dataset::new(images, labels, 28, 28).expect("valid"))
    }

    fn augmented(workers: usize, prefetch: usize) -> LoaderConfig {
        LoaderConfig {
            workers,
            prefetch,
            augment: AugmentConfig {
                random_crop: Some(augment::RandomCrop { padding: 4 }),
                hflip: true,
                cutout: Some(augment::Cutout {
                    holes: 1,
                    length: 8,
                }),
                mix: Some(augment::MixConfig::TIMM),
                label_smoothing: 0.1,
                ..AugmentConfig::none()
            },
            ..LoaderConfig::new(7, 42, Normalization::FASHION_MNIST)
        }
    }

    #[test]
    fn unaugmented_batches_are_the_table_of_the_pixels() {
        let ds = fashion_like(9);
        let loader = BatchLoader::new(
            ds.clone(),
            LoaderConfig::new(4, 3, Normalization::FASHION_MNIST),
        )
        .expect("loader");
        for b in collect(&loader, 0) {
            assert_eq!(b.frames, 1);
            assert!(b.soft_targets.is_none());
            for (j, &i) in b.sample_indices.iter().enumerate() {
                let want: Vec<u32> = ds
                    .image(i)
                    .expect("in range")
                    .iter()
                    .map(|&p| Normalization::FASHION_MNIST.apply(p).to_bits())
                    .collect();
                let got: Vec<u32> = b.images[j * 784..(j + 1) * 784]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(got, want, "sample {i}");
            }
        }
    }

    #[test]
    fn augmented_batches_do_not_depend_on_worker_count() {
        let ds = fashion_like(45);
        let one = collect(
            &BatchLoader::new(ds.clone(), augmented(1, 2)).expect("loader"),
            2,
        );
        for (workers, prefetch) in [(2, 0), (3, 5), (8, 1)] {
            let many = collect(
                &BatchLoader::new(ds.clone(), augmented(workers, prefetch)).expect("loader"),
                2,
            );
            assert_eq!(many, one, "{workers} workers, prefetch {prefetch}");
        }
        // The augmentation did something, differently per epoch, and the same in a rerun.
        let plain = collect(
            &BatchLoader::new(
                ds.clone(),
                LoaderConfig::new(7, 42, Normalization::FASHION_MNIST),
            )
            .expect("loader"),
            2,
        );
        assert_eq!(plain.len(), one.len());
        assert!(plain
            .iter()
            .zip(&one)
            .all(|(p, a)| p.sample_indices == a.sample_indices));
        assert_ne!(plain, one);
        let loader = BatchLoader::new(ds, augmented(2, 2)).expect("loader");
        assert_ne!(collect(&loader, 3)[0].images, one[0].images);
        assert_eq!(loader.make_batch(2, 1).expect("batch"), one[1]);
        let t = one[1]
            .soft_targets
            .as_ref()
            .expect("mixup gives soft targets");
        assert_eq!(t.len(), one[1].len() * 10);
    }

    #[test]
    fn flip_only_gives_the_image_or_its_mirror() {
        let ds = fashion_like(40);
        let cfg = LoaderConfig {
            augment: AugmentConfig {
                hflip: true,
                ..AugmentConfig::none()
            },
            ..LoaderConfig::new(40, 5, Normalization::UNIT)
        };
        let b = collect(&BatchLoader::new(ds.clone(), cfg).expect("loader"), 0).remove(0);
        let mut flipped = 0;
        for (j, &i) in b.sample_indices.iter().enumerate() {
            let img = ds.image(i).expect("in range");
            let got = &b.images[j * 784..(j + 1) * 784];
            let same = img
                .iter()
                .zip(got)
                .all(|(&p, &v)| f32::from(p) / 255.0 == v);
            let mirrored = (0..784).all(|k| {
                let (y, x) = (k / 28, k % 28);
                f32::from(img[y * 28 + 27 - x]) / 255.0 == got[k]
            });
            assert!(
                same != mirrored,
                "sample {i}: neither the image nor its mirror"
            );
            flipped += usize::from(mirrored);
        }
        assert!((8..=32).contains(&flipped), "{flipped} of 40 flipped");
    }

    #[test]
    fn bad_worker_count_and_augmentation_are_refused() {
        let ds = fashion_like(2);
        let zero = LoaderConfig {
            workers: 0,
            ..LoaderConfig::new(1, 0, Normalization::UNIT)
        };
        assert!(matches!(
            BatchLoader::new(ds.clone(), zero),
            Err(DataError::InvalidConfig(_))
        ));
        let wide_pad = LoaderConfig {
            augment: AugmentConfig {
                random_crop: Some(augment::RandomCrop { padding: 100 }),
                ..AugmentConfig::none()
            },
            ..LoaderConfig::new(1, 0, Normalization::UNIT)
        };
        assert!(BatchLoader::new(ds, wide_pad).is_err());
    }

    #[test]
    fn rgb_batches_normalise_each_channel_with_its_own_constants() {
        let n = 5;
        let images: Vec<u8> = (0..n * 3 * 4).map(|i| (i * 13 % 256) as u8).collect();
        let labels: Vec<u16> = (0..n as u16).map(|i| i * 20).collect();
        let ds = Arc::new(Dataset::with_shape(images, labels, 3, 2, 2, 100).expect("valid"));
        let norm = ChannelNorm::CIFAR100;
        let loader = BatchLoader::new(ds.clone(), LoaderConfig::new(2, 1, norm)).expect("loader");
        for b in collect(&loader, 0) {
            assert_eq!(b.shape(), [b.len(), 3, 2, 2]);
            assert_eq!(b.classes, 100);
            for (j, &i) in b.sample_indices.iter().enumerate() {
                let img = ds.image(i).expect("in range");
                for c in 0..3 {
                    for k in 0..4 {
                        let want = norm.channel(c).apply(img[c * 4 + k]);
                        assert_eq!(b.images[j * 12 + c * 4 + k].to_bits(), want.to_bits());
                    }
                }
                assert_eq!(b.labels[j], ds.labels()[i]);
            }
        }
        // Labels above 255 go through unchanged (ImageNet-1k's 1000 classes).
        let wide =
            Arc::new(Dataset::with_shape(vec![0; 12], vec![300], 3, 2, 2, 1000).expect("valid"));
        let b = BatchLoader::new(wide, LoaderConfig::new(1, 0, norm))
            .expect("loader")
            .make_batch(0, 0)
            .expect("batch");
        assert_eq!(b.labels, [300]);
    }
}
