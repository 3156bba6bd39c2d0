//! Background batch loader.
//!
//! One worker thread per epoch assembles batches of normalised `f32` images in layout
//! `[B][1][H][W]` (contiguous, row-major) and hands them over a bounded channel
//! (`sync_channel(prefetch)`), so at most `prefetch` finished batches wait while the trainer works.
//!
//! Order: with `shuffle`, epoch `e` visits the samples in `epoch_order(len, seed, e, true)`, a
//! Fisher–Yates permutation drawn from `Rng::for_stream(seed, e)`; the same seed and epoch always
//! give the same order, on any machine. The last partial batch is kept unless `drop_last`.
//!
//! Dropping an [`EpochBatches`] early is fine: the worker sees the closed channel, stops, and the
//! drop joins it.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{DataError, Dataset, Normalization};
use crate::rng::Rng;

/// Loader settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// Shuffle each epoch (else the natural order `0..len`).
    pub shuffle: bool,
    /// Seed of the per-epoch shuffles.
    pub seed: u64,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Pixel normalisation.
    pub normalization: Normalization,
    /// Finished batches that may wait in the channel (the bound of `sync_channel`).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Shuffled, last partial batch kept, prefetch 2.
    pub fn new(batch_size: usize, seed: u64, normalization: Normalization) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            seed,
            drop_last: false,
            normalization,
            prefetch: 2,
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
    /// Normalised images, `[B][1][H][W]` contiguous (`B = labels.len()`).
    pub images: Vec<f32>,
    /// Labels, one per image.
    pub labels: Vec<u8>,
    /// Dataset indices of the samples, in batch order.
    pub sample_indices: Vec<usize>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
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

    /// `[B, 1, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 1, self.height, self.width]
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

/// Produces the batches of each epoch on a background thread.
#[derive(Debug, Clone)]
pub struct BatchLoader {
    dataset: Arc<Dataset>,
    config: LoaderConfig,
}

impl BatchLoader {
    /// Checks the config (`batch_size > 0`).
    pub fn new(dataset: Arc<Dataset>, config: LoaderConfig) -> Result<Self, DataError> {
        if config.batch_size == 0 {
            return Err(DataError::InvalidConfig("batch_size must be > 0".into()));
        }
        let norm = config.normalization;
        if !(norm.std.is_finite() && norm.std != 0.0 && norm.mean.is_finite()) {
            return Err(DataError::InvalidConfig(format!(
                "normalisation {norm:?} must have a finite mean and a finite non-zero std"
            )));
        }
        Ok(BatchLoader { dataset, config })
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// The config.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Batches per epoch (counting a partial last batch unless `drop_last`).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size);
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
            self.dataset.len()
        }
    }

    /// Starts the worker for `epoch` and returns the iterator over its batches.
    pub fn epoch(&self, epoch: u64) -> Result<EpochBatches, DataError> {
        self.epoch_from(epoch, 0)
    }

    /// Like [`BatchLoader::epoch`] but skips the first `start_batch` batches (resuming a
    /// checkpoint taken mid-epoch); batch indices keep their place in the full epoch.
    pub fn epoch_from(&self, epoch: u64, start_batch: usize) -> Result<EpochBatches, DataError> {
        let total = self.batches_per_epoch();
        let remaining = total.saturating_sub(start_batch);
        let (tx, rx) = sync_channel(self.config.prefetch);
        let dataset = Arc::clone(&self.dataset);
        let config = self.config.clone();
        let handle = std::thread::Builder::new()
            .name(format!("empf-loader-e{epoch}"))
            .spawn(move || {
                let order = epoch_order(dataset.len(), config.seed, epoch, config.shuffle);
                let table = config.normalization.table();
                for (index, chunk) in order
                    .chunks(config.batch_size)
                    .enumerate()
                    .take(total)
                    .skip(start_batch)
                {
                    let batch = assemble(&dataset, &table, epoch, index, chunk);
                    if tx.send(batch).is_err() {
                        return; // receiver dropped: stop early
                    }
                }
            })
            .map_err(DataError::LoaderSpawn)?;
        Ok(EpochBatches {
            rx: Some(rx),
            handle: Some(handle),
            remaining,
        })
    }
}

/// Builds one batch; `indices` come from a permutation of `0..dataset.len()`.
fn assemble(
    dataset: &Dataset,
    table: &[f32; 256],
    epoch: u64,
    index: usize,
    indices: &[usize],
) -> Batch {
    let (h, w) = (dataset.height(), dataset.width());
    let mut images = Vec::with_capacity(indices.len() * h * w);
    let mut labels = Vec::with_capacity(indices.len());
    let mut sample_indices = Vec::with_capacity(indices.len());
    for &i in indices {
        if let (Some(img), Some(label)) = (dataset.image(i), dataset.label(i)) {
            images.extend(img.iter().map(|&p| table[usize::from(p)]));
            labels.push(label);
            sample_indices.push(i);
        }
    }
    Batch {
        epoch,
        index,
        images,
        labels,
        sample_indices,
        height: h,
        width: w,
    }
}

/// Iterator over one epoch's batches; see [`BatchLoader::epoch`].
#[derive(Debug)]
pub struct EpochBatches {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let batch = self.rx.as_ref()?.recv().ok();
        if batch.is_some() {
            self.remaining = self.remaining.saturating_sub(1);
        } else {
            self.remaining = 0;
        }
        batch
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Close the channel first so a worker blocked on `send` wakes up and exits.
        drop(self.rx.take());
        if let Some(handle) = self.handle.take() {
            // A worker panic has already been reported on stderr by the panic hook.
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let batches: Vec<Batch> = loader.epoch(0).expect("epoch").collect();
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
                .flat_map(|b| b.sample_indices)
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
        let b: Vec<Batch> = loader.epoch_from(3, 1).expect("epoch").collect();
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
}
