//! Training-time augmentations (spec §6), each switched on by its own field of
//! [`AugmentConfig`]; [`AugmentConfig::none`] (the default) changes nothing.
//!
//! Order, as in the authors' previous pipeline (torchvision semantics):
//! 1. on the `u8` CHW image: RandomCrop with zero padding → horizontal flip;
//! 2. normalisation to `f32`;
//! 3. Cutout on the normalised image (holes set to 0, i.e. to the channel mean, as the usual
//!    `Cutout` after `Normalize` does).
//!
//! Determinism: every random choice for a sample comes from its own generator,
//! [`sample_rng`]`(seed, epoch, dataset index)`, so a sample's augmentation does not depend on
//! which worker thread makes it, on the batch size, or on what else is in its batch.

use crate::rng::{splitmix64, Rng};

use super::ImageU8;

/// torchvision `RandomCrop(size = input size, padding)`: pad every side with `padding` zero
/// pixels, then cut a window of the original size at a uniform offset in `0..=2·padding` per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomCrop {
    /// Zero pixels added on each side before cropping (4 for CIFAR's 32×32).
    pub padding: usize,
}

/// DeVries & Taylor's Cutout: `holes` squares of side `length`, each centred at a uniform pixel
/// and clipped at the border (so a hole near the edge covers less), set to 0 in every channel
/// of the normalised image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutout {
    /// Number of squares.
    pub holes: usize,
    /// Side of each square in pixels.
    pub length: usize,
}

/// Which augmentations run, in the fixed order of the module docs. Build one from
/// [`AugmentConfig::none`] with struct-update syntax:
/// `AugmentConfig { hflip: true, ..AugmentConfig::none() }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AugmentConfig {
    /// Random crop with zero padding.
    pub random_crop: Option<RandomCrop>,
    /// Horizontal flip with probability ½.
    pub hflip: bool,
    /// Cutout on the normalised image.
    pub cutout: Option<Cutout>,
}

impl AugmentConfig {
    /// No augmentation.
    pub fn none() -> Self {
        AugmentConfig::default()
    }

    /// Whether this config changes nothing.
    pub fn is_none(&self) -> bool {
        *self == AugmentConfig::none()
    }

    /// Checks the settings against the image side lengths (a crop padding or cutout length
    /// beyond the image is almost certainly a typo).
    pub fn validate(&self, height: usize, width: usize) -> Result<(), String> {
        let side = height.max(width);
        if let Some(c) = self.random_crop {
            if c.padding > side {
                return Err(format!(
                    "random-crop padding {} is larger than the {height}x{width} image",
                    c.padding
                ));
            }
        }
        if let Some(c) = self.cutout {
            if c.length == 0 || c.length > 2 * side || c.holes > 64 {
                return Err(format!(
                    "cutout of {} hole(s) of length {} does not fit a {height}x{width} image (length 1 to {}, at most 64 holes)",
                    c.holes,
                    c.length,
                    2 * side
                ));
            }
        }
        Ok(())
    }

    /// Runs the `u8` stage (crop, flip) on `img` in place.
    pub fn apply_u8(&self, img: &mut ImageU8, rng: &mut Rng) {
        if let Some(c) = self.random_crop {
            random_crop(img, c.padding, rng);
        }
        if self.hflip && rng.below(2) == 1 {
            hflip(img);
        }
    }

    /// Runs the stage after normalisation (Cutout) on one `[C][H][W]` image.
    pub fn apply_f32(&self, img: &mut [f32], height: usize, width: usize, rng: &mut Rng) {
        if let Some(c) = self.cutout {
            cutout(img, height, width, c, rng);
        }
    }
}

/// The generator of sample `index` in epoch `epoch` (independent of thread, batch and order).
pub fn sample_rng(seed: u64, epoch: u64, index: usize) -> Rng {
    // Mixed through SplitMix64 with a tag, so these streams are unrelated to the shuffle's
    // `Rng::for_stream(seed, epoch)`.
    let mut s = seed ^ 0xA116_3E47_0000_0000 ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Rng::for_stream(splitmix64(&mut s), index as u64)
}

/// The generator of batch `index` in epoch `epoch` (Mixup/CutMix draw once per batch).
pub fn batch_rng(seed: u64, epoch: u64, index: usize) -> Rng {
    let mut s = seed ^ 0xBA7C_4000_0000_0000 ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Rng::for_stream(splitmix64(&mut s), index as u64)
}

/// Pads with `padding` zeros on every side and crops back to the original size at an offset
/// drawn uniformly in `0..=2·padding` (top first, then left, as torchvision draws them).
pub fn random_crop(img: &mut ImageU8, padding: usize, rng: &mut Rng) {
    if padding == 0 {
        return;
    }
    let top = rng.index(2 * padding + 1);
    let left = rng.index(2 * padding + 1);
    crop_shift(
        img,
        top as isize - padding as isize,
        left as isize - padding as isize,
    );
}

/// `out(y, x) = in(y + dy, x + dx)`, zero outside the input.
pub fn crop_shift(img: &mut ImageU8, dy: isize, dx: isize) {
    if dy == 0 && dx == 0 {
        return;
    }
    let (h, w) = (img.height, img.width);
    let mut out = vec![0u8; img.data.len()];
    for c in 0..img.channels {
        let src = img.plane(c);
        let dst = &mut out[c * h * w..(c + 1) * h * w];
        for y in 0..h {
            let sy = y as isize + dy;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            // Columns x with 0 ≤ x + dx < w.
            let x0 = (-dx).clamp(0, w as isize) as usize;
            let x1 = (w as isize - dx).clamp(0, w as isize) as usize;
            if x0 >= x1 {
                continue;
            }
            let sy = sy as usize;
            let sx0 = (x0 as isize + dx) as usize;
            dst[y * w + x0..y * w + x1]
                .copy_from_slice(&src[sy * w + sx0..sy * w + sx0 + (x1 - x0)]);
        }
    }
    img.data = out;
}

/// Mirrors every row.
pub fn hflip(img: &mut ImageU8) {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// Cutout on a `[C][H][W]` image (see [`Cutout`]); centres are drawn `y` then `x` per hole.
pub fn cutout(img: &mut [f32], height: usize, width: usize, c: Cutout, rng: &mut Rng) {
    let plane = height * width;
    if plane == 0 {
        return;
    }
    for _ in 0..c.holes {
        let (y0, y1, x0, x1) = cutout_box(height, width, c.length, rng);
        for ch in img.chunks_exact_mut(plane) {
            for y in y0..y1 {
                ch[y * width + x0..y * width + x1].fill(0.0);
            }
        }
    }
}

/// One hole: centre `(y, x)` uniform over the image, box `[y − ⌊L/2⌋, y + ⌊L/2⌋)` clipped, as
/// DeVries & Taylor's `np.clip(y - length // 2, 0, h)` … (an odd length cuts `L − 1`).
fn cutout_box(
    height: usize,
    width: usize,
    length: usize,
    rng: &mut Rng,
) -> (usize, usize, usize, usize) {
    let y = rng.index(height);
    let x = rng.index(width);
    let half = length / 2;
    let y0 = y.saturating_sub(half);
    let y1 = (y + half).min(height);
    let x0 = x.saturating_sub(half);
    let x1 = (x + half).min(width);
    (y0, y1, x0, x1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(c: usize, h: usize, w: usize) -> ImageU8 {
        ImageU8 {
            channels: c,
            height: h,
            width: w,
            data: (0..c * h * w).map(|i| (i * 7 % 251 + 1) as u8).collect(),
        }
    }

    #[test]
    fn flip_twice_is_identity_and_flip_mirrors() {
        let orig = ramp(3, 4, 5);
        let mut img = orig.clone();
        hflip(&mut img);
        assert_ne!(img, orig);
        for c in 0..3 {
            for y in 0..4 {
                for x in 0..5 {
                    assert_eq!(img.plane(c)[y * 5 + x], orig.plane(c)[y * 5 + 4 - x]);
                }
            }
        }
        hflip(&mut img);
        assert_eq!(img, orig);
    }

    #[test]
    fn crop_with_zero_padding_is_identity() {
        let orig = ramp(1, 6, 6);
        let mut img = orig.clone();
        let mut rng = Rng::seed_from_u64(1);
        random_crop(&mut img, 0, &mut rng);
        assert_eq!(img, orig);
    }

    /// Against a plain reference: build the padded image, cut the window.
    #[test]
    fn crop_matches_pad_then_window() {
        let (c, h, w, p) = (2, 5, 7, 3);
        let orig = ramp(c, h, w);
        for seed in 0..40 {
            let mut img = orig.clone();
            let mut rng = Rng::seed_from_u64(seed);
            random_crop(&mut img, p, &mut rng);
            let mut rng = Rng::seed_from_u64(seed);
            let top = rng.index(2 * p + 1);
            let left = rng.index(2 * p + 1);
            let (ph, pw) = (h + 2 * p, w + 2 * p);
            let mut padded = vec![0u8; c * ph * pw];
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        padded[ch * ph * pw + (y + p) * pw + x + p] = orig.plane(ch)[y * w + x];
                    }
                }
            }
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        assert_eq!(
                            img.plane(ch)[y * w + x],
                            padded[ch * ph * pw + (y + top) * pw + x + left],
                            "seed {seed} at {ch},{y},{x}"
                        );
                    }
                }
            }
        }
        // Shifts past the image leave it black, never panic.
        let mut img = orig.clone();
        crop_shift(&mut img, 9, -20);
        assert!(img.data.iter().all(|&v| v == 0));
    }

    #[test]
    fn cutout_area_is_the_clipped_square_in_every_channel() {
        let (h, w) = (8, 10);
        for seed in 0..50 {
            let mut img = vec![1.0f32; 3 * h * w];
            let mut rng = Rng::seed_from_u64(seed);
            cutout(
                &mut img,
                h,
                w,
                Cutout {
                    holes: 1,
                    length: 4,
                },
                &mut rng,
            );
            let mut rng = Rng::seed_from_u64(seed);
            let (y, x) = (rng.index(h), rng.index(w));
            let rows = (y + 2).min(h) - y.saturating_sub(2);
            let cols = (x + 2).min(w) - x.saturating_sub(2);
            for ch in img.chunks_exact(h * w) {
                let zeros = ch.iter().filter(|&&v| v == 0.0).count();
                assert_eq!(zeros, rows * cols, "seed {seed}");
                assert_eq!(ch[y * w + x], 0.0, "the centre is always cut");
            }
        }
    }

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a = sample_rng(42, 3, 17).next_u64();
        assert_eq!(a, sample_rng(42, 3, 17).next_u64());
        assert_ne!(a, sample_rng(42, 3, 18).next_u64());
        assert_ne!(a, sample_rng(42, 4, 17).next_u64());
        assert_ne!(a, sample_rng(43, 3, 17).next_u64());
        assert_ne!(a, batch_rng(42, 3, 17).next_u64());
    }

    #[test]
    fn validate_refuses_absurd_settings() {
        let ok = AugmentConfig {
            random_crop: Some(RandomCrop { padding: 4 }),
            hflip: true,
            cutout: Some(Cutout {
                holes: 1,
                length: 16,
            }),
        };
        assert!(ok.validate(32, 32).is_ok());
        assert!(AugmentConfig::none().is_none() && !ok.is_none());
        let bad_pad = AugmentConfig {
            random_crop: Some(RandomCrop { padding: 40 }),
            ..AugmentConfig::none()
        };
        assert!(bad_pad.validate(32, 32).is_err());
        let bad_cut = AugmentConfig {
            cutout: Some(Cutout {
                holes: 1,
                length: 0,
            }),
            ..AugmentConfig::none()
        };
        assert!(bad_cut.validate(28, 28).is_err());
    }
}
