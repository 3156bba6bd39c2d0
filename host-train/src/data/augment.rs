//! Training-time augmentations (spec §6), each switched on by its own field of
//! [`AugmentConfig`]; [`AugmentConfig::none`] (the default) changes nothing.
//!
//! Order, as in the authors' previous pipeline (torchvision semantics):
//! 1. geometry to the network's size: RandomResizedCrop if on (any input size), else an image
//!    of another size is resized (shorter side to size/0.875) and centre-cropped;
//! 2. on the `u8` CHW image: RandomCrop with zero padding → horizontal flip → AutoAugment;
//! 3. normalisation to `f32`;
//! 4. Cutout on the normalised image (holes set to 0, i.e. to the channel mean, as the usual
//!    `Cutout` after `Normalize` does); event frames: the DVS augmentation;
//! 5. per batch: Mixup/CutMix (timm, batch mode) and label smoothing into soft targets.
//!
//! Presets for the paper's pipelines (spec §6): [`AugmentConfig::cifar`],
//! [`AugmentConfig::tiny_imagenet`], [`AugmentConfig::imagenet`], [`AugmentConfig::dvs`]; and
//! [`AugmentConfig::parse`] for a command-line flag.
//!
//! Determinism: every random choice for a sample comes from its own generator,
//! [`sample_rng`]`(seed, epoch, dataset index)`, so a sample's augmentation does not depend on
//! which worker thread makes it, on the batch size, or on what else is in its batch.

use crate::rng::{splitmix64, Rng};

use super::autoaugment::AutoAugmentPolicy;
use super::{image, ImageU8};

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

/// torchvision `RandomResizedCrop(size, scale, ratio)` (see [`image::random_resized_crop`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    /// Area fraction range (0.08, 1).
    pub scale: (f32, f32),
    /// Aspect ratio range (3/4, 4/3), drawn log-uniformly.
    pub ratio: (f32, f32),
}

impl RandomResizedCrop {
    /// torchvision's defaults.
    pub const STANDARD: RandomResizedCrop = RandomResizedCrop {
        scale: (0.08, 1.0),
        ratio: (3.0 / 4.0, 4.0 / 3.0),
    };
}

/// timm `Mixup` in batch mode: with probability `prob` the batch is mixed; CutMix is chosen with
/// probability `switch_prob` (when both alphas are > 0), else Mixup; λ ~ Beta(α, α). Mixup
/// blends each sample with the batch reversed (`x ← λx + (1−λ)x.flip(0)`); CutMix pastes one box
/// of area ≈ (1−λ) from the reversed batch and corrects λ to the pasted area. Targets
/// `λ·y + (1−λ)·y.flip(0)` with smoothed one-hot `y` (see [`AugmentConfig::label_smoothing`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixConfig {
    /// Mixup's α (0 = off).
    pub mixup_alpha: f32,
    /// CutMix's α (0 = off).
    pub cutmix_alpha: f32,
    /// Probability that a batch is mixed at all.
    pub prob: f32,
    /// Probability of CutMix rather than Mixup when both are on.
    pub switch_prob: f32,
}

impl MixConfig {
    /// The paper's code: `Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)`.
    pub const TIMM: MixConfig = MixConfig {
        mixup_alpha: 0.8,
        cutmix_alpha: 1.0,
        prob: 1.0,
        switch_prob: 0.5,
    };
}

/// NDA-style augmentation of event frames (Li et al. 2022), the same transform on every frame:
/// horizontal flip with probability ½, then one of (uniformly) a circular roll by up to `roll`
/// pixels per axis, a rotation by up to ±`rotate_degrees` (nearest, zero fill), or a Cutout
/// square of side `cutout_length`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DvsAugment {
    /// Largest roll per axis, pixels.
    pub roll: usize,
    /// Largest rotation, degrees.
    pub rotate_degrees: f32,
    /// Cutout side, pixels.
    pub cutout_length: usize,
}

impl DvsAugment {
    /// Settings for 48×48 frames: roll ±5 (as TET/NDA), rotate ±30°, cutout 16.
    pub const STANDARD: DvsAugment = DvsAugment {
        roll: 5,
        rotate_degrees: 30.0,
        cutout_length: 16,
    };
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
    /// AutoAugment policy (3-channel images; on grey images the colour ops do nothing).
    pub auto_augment: Option<AutoAugmentPolicy>,
    /// RandomResizedCrop to the network's size (replaces the evaluation resize).
    pub random_resized_crop: Option<RandomResizedCrop>,
    /// Mixup/CutMix.
    pub mix: Option<MixConfig>,
    /// Label smoothing ε folded into the soft targets (timm's `label_smoothing`; 0 = off).
    pub label_smoothing: f32,
    /// Event-frame augmentation.
    pub dvs: Option<DvsAugment>,
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

    /// Whether batches carry soft targets (Mixup/CutMix or label smoothing on).
    pub fn soft_targets(&self) -> bool {
        self.mix.is_some() || self.label_smoothing != 0.0
    }

    /// CIFAR (spec §6): RandomCrop(32, pad 4) + HFlip + CIFAR10 policy + Cutout(1, `cutout`:
    /// 16 for CIFAR-10, 8 for CIFAR-100) + timm Mixup/CutMix with label smoothing 0.1.
    pub fn cifar(cutout: usize) -> Self {
        AugmentConfig {
            random_crop: Some(RandomCrop { padding: 4 }),
            hflip: true,
            cutout: Some(Cutout {
                holes: 1,
                length: cutout,
            }),
            auto_augment: Some(AutoAugmentPolicy::Cifar10),
            mix: Some(MixConfig::TIMM),
            label_smoothing: 0.1,
            ..AugmentConfig::none()
        }
    }

    /// Tiny-ImageNet: RandomResizedCrop + HFlip + ImageNet policy + Mixup/CutMix, smoothing 0.1.
    pub fn tiny_imagenet() -> Self {
        AugmentConfig {
            random_resized_crop: Some(RandomResizedCrop::STANDARD),
            hflip: true,
            auto_augment: Some(AutoAugmentPolicy::ImageNet),
            mix: Some(MixConfig::TIMM),
            label_smoothing: 0.1,
            ..AugmentConfig::none()
        }
    }

    /// ImageNet: RandomResizedCrop + HFlip + Mixup/CutMix, smoothing 0.1.
    pub fn imagenet() -> Self {
        AugmentConfig {
            random_resized_crop: Some(RandomResizedCrop::STANDARD),
            hflip: true,
            mix: Some(MixConfig::TIMM),
            label_smoothing: 0.1,
            ..AugmentConfig::none()
        }
    }

    /// CIFAR10-DVS: the NDA-style event augmentation + Mixup/CutMix, smoothing 0.1.
    pub fn dvs() -> Self {
        AugmentConfig {
            dvs: Some(DvsAugment::STANDARD),
            mix: Some(MixConfig::TIMM),
            label_smoothing: 0.1,
            ..AugmentConfig::none()
        }
    }

    /// Parses a comma-separated list for a command-line flag: `none`, `crop=P` (padding P),
    /// `flip`, `cutout=L` or `cutout=NxL`, `autoaugment=cifar10|imagenet`, `rrc`, `mixup`
    /// (timm's settings), `smoothing=E`, `dvs`, or a preset `cifar10`, `cifar100`,
    /// `tiny-imagenet`, `imagenet`, `dvs-preset`; later items add to earlier ones. Example:
    /// `crop=4,flip,cutout=1x16`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut cfg = AugmentConfig::none();
        let num = |item: &str, v: &str| -> Result<usize, String> {
            v.parse()
                .map_err(|_| format!("augmentation {item:?}: {v:?} is not a whole number"))
        };
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            match (key, value) {
                ("none", None) => cfg = AugmentConfig::none(),
                ("flip" | "hflip", None) => cfg.hflip = true,
                ("crop", Some(v)) => cfg.random_crop = Some(RandomCrop { padding: num(item, v)? }),
                ("cutout", Some(v)) => {
                    let (holes, length) = match v.split_once('x') {
                        Some((n, l)) => (num(item, n)?, num(item, l)?),
                        None => (1, num(item, v)?),
                    };
                    cfg.cutout = Some(Cutout { holes, length });
                }
                ("autoaugment", Some("cifar10")) => {
                    cfg.auto_augment = Some(AutoAugmentPolicy::Cifar10)
                }
                ("autoaugment", Some("imagenet")) => {
                    cfg.auto_augment = Some(AutoAugmentPolicy::ImageNet)
                }
                ("rrc", None) => cfg.random_resized_crop = Some(RandomResizedCrop::STANDARD),
                ("mixup", None) => cfg.mix = Some(MixConfig::TIMM),
                ("smoothing", Some(v)) => {
                    let e: f32 = v
                        .parse()
                        .map_err(|_| format!("augmentation {item:?}: {v:?} is not a number"))?;
                    if !(0.0..1.0).contains(&e) {
                        return Err(format!("label smoothing {e} must be in [0, 1)"));
                    }
                    cfg.label_smoothing = e;
                }
                ("dvs", None) => cfg.dvs = Some(DvsAugment::STANDARD),
                ("cifar10", None) => cfg = AugmentConfig::cifar(16),
                ("cifar100", None) => cfg = AugmentConfig::cifar(8),
                ("tiny-imagenet", None) => cfg = AugmentConfig::tiny_imagenet(),
                ("imagenet", None) => cfg = AugmentConfig::imagenet(),
                ("dvs-preset", None) => cfg = AugmentConfig::dvs(),
                _ => {
                    return Err(format!(
                        "unknown augmentation {item:?} (expected none, crop=P, flip, cutout=L or NxL, autoaugment=cifar10|imagenet, rrc, mixup, smoothing=E, dvs, or a preset cifar10, cifar100, tiny-imagenet, imagenet, dvs-preset)"
                    ))
                }
            }
        }
        Ok(cfg)
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
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!(
                "label smoothing {} must be in [0, 1)",
                self.label_smoothing
            ));
        }
        if let Some(m) = self.mix {
            let unit = |p: f32| (0.0..=1.0).contains(&p);
            let alpha = |a: f32| a.is_finite() && (0.0..=100.0).contains(&a);
            if !(alpha(m.mixup_alpha)
                && alpha(m.cutmix_alpha)
                && unit(m.prob)
                && unit(m.switch_prob))
            {
                return Err(format!("mixup settings {m:?} out of range"));
            }
        }
        if let Some(r) = self.random_resized_crop {
            let ok = 0.0 < r.scale.0
                && r.scale.0 <= r.scale.1
                && r.scale.1 <= 1.0
                && 0.0 < r.ratio.0
                && r.ratio.0 <= r.ratio.1
                && r.ratio.1.is_finite();
            if !ok {
                return Err(format!("random-resized-crop settings {r:?} out of range"));
            }
        }
        if let Some(d) = self.dvs {
            if d.roll > side || d.cutout_length == 0 || !d.rotate_degrees.is_finite() {
                return Err(format!(
                    "DVS augmentation {d:?} does not fit a {height}x{width} frame"
                ));
            }
        }
        Ok(())
    }

    /// Brings an image of any size to `height × width`: RandomResizedCrop when on, else the
    /// evaluation resize + centre crop (identity for an image of the right size).
    pub fn fit(&self, img: ImageU8, height: usize, width: usize, rng: &mut Rng) -> ImageU8 {
        match self.random_resized_crop {
            Some(r) => image::random_resized_crop(&img, height, width, r.scale, r.ratio, rng),
            None if (img.height, img.width) == (height, width) => img,
            None => image::resize_center_crop(&img, height, width),
        }
    }

    /// Runs the `u8` stage (crop, flip, AutoAugment) on `img` in place.
    pub fn apply_u8(&self, img: &mut ImageU8, rng: &mut Rng) {
        if let Some(c) = self.random_crop {
            random_crop(img, c.padding, rng);
        }
        if self.hflip && rng.below(2) == 1 {
            hflip(img);
        }
        if let Some(p) = self.auto_augment {
            p.apply(img, rng);
        }
    }

    /// Runs the stage after normalisation on one sample of `frames` frames of `[C][H][W]`:
    /// Cutout, then the DVS augmentation; every frame gets the same transform.
    pub fn apply_f32(&self, sample: &mut [f32], height: usize, width: usize, rng: &mut Rng) {
        if let Some(c) = self.cutout {
            cutout(sample, height, width, c, rng);
        }
        if let Some(d) = self.dvs {
            dvs_augment(sample, height, width, d, rng);
        }
    }
}

/// The NDA-style event augmentation (see [`DvsAugment`]) on `[T·C][H][W]` planes.
pub fn dvs_augment(planes: &mut [f32], height: usize, width: usize, d: DvsAugment, rng: &mut Rng) {
    let n = height * width;
    if n == 0 {
        return;
    }
    if rng.below(2) == 1 {
        for row in planes.chunks_exact_mut(width) {
            row.reverse();
        }
    }
    match rng.below(3) {
        0 => {
            let span = 2 * d.roll + 1;
            let dy = rng.index(span) as isize - d.roll as isize;
            let dx = rng.index(span) as isize - d.roll as isize;
            for p in planes.chunks_exact_mut(n) {
                roll(p, height, width, dy, dx);
            }
        }
        1 => {
            let deg = d.rotate_degrees * (2.0 * rng.uniform_f32() - 1.0);
            for p in planes.chunks_exact_mut(n) {
                rotate_f32(p, height, width, deg);
            }
        }
        _ => cutout(
            planes,
            height,
            width,
            Cutout {
                holes: 1,
                length: d.cutout_length,
            },
            rng,
        ),
    }
}

/// `torch.roll(shifts=(dy, dx))`: `out(y, x) = in(y − dy mod H, x − dx mod W)`.
pub fn roll(plane: &mut [f32], height: usize, width: usize, dy: isize, dx: isize) {
    let src = plane.to_vec();
    let (h, w) = (height as isize, width as isize);
    for y in 0..h {
        let sy = (y - dy).rem_euclid(h);
        for x in 0..w {
            let sx = (x - dx).rem_euclid(w);
            plane[(y * w + x) as usize] = src[(sy * w + sx) as usize];
        }
    }
}

/// Counter-clockwise rotation about the centre, nearest neighbour, zero outside.
pub fn rotate_f32(plane: &mut [f32], height: usize, width: usize, degrees: f32) {
    let src = plane.to_vec();
    let a = -f64::from(degrees).to_radians();
    let (cos, sin) = (a.cos(), a.sin());
    let (cx, cy) = (width as f64 / 2.0, height as f64 / 2.0);
    for y in 0..height {
        for x in 0..width {
            let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
            let sx = cos * dx + sin * dy + cx;
            let sy = -sin * dx + cos * dy + cy;
            plane[y * width + x] =
                if sx >= 0.0 && sy >= 0.0 && sx < width as f64 && sy < height as f64 {
                    src[sy as usize * width + sx as usize]
                } else {
                    0.0
                };
        }
    }
}

/// Gamma(shape, 1) variate: Marsaglia & Tsang (2000) for shape ≥ 1, boosted by `U^{1/shape}`
/// below 1.
pub fn gamma(shape: f64, rng: &mut Rng) -> f64 {
    if shape < 1.0 {
        let u = 1.0 - rng.uniform_f64(); // in (0, 1]
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let (x, _) = rng.normal_pair();
        let x = f64::from(x);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - rng.uniform_f64();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Beta(a, a) as `X / (X + Y)` with `X, Y ~ Gamma(a)`.
pub fn beta_symmetric(a: f64, rng: &mut Rng) -> f64 {
    let x = gamma(a, rng);
    let y = gamma(a, rng);
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

/// Mixes one batch in place (layout `[T][B][C][H][W]`, `frame_len = C·H·W`) and returns its
/// soft targets `[B][classes]` (timm batch mode; see [`MixConfig`]). Draws from `rng`: `u < prob`,
/// `u < switch_prob`, λ, then CutMix's box centre (y, x).
#[allow(clippy::too_many_arguments)]
pub fn mix_batch(
    images: &mut [f32],
    labels: &[u16],
    classes: usize,
    (channels, height, width): (usize, usize, usize),
    mix: Option<MixConfig>,
    smoothing: f32,
    rng: &mut Rng,
) -> Vec<f32> {
    let b = labels.len();
    let off = smoothing / classes as f32;
    let on = 1.0 - smoothing + off;
    let one_hot = |l: u16| {
        let mut row = vec![off; classes];
        if let Some(v) = row.get_mut(usize::from(l)) {
            *v = on;
        }
        row
    };
    let mut lam = 1.0f64;
    if let Some(m) = mix {
        if b > 0 && rng.uniform_f64() < f64::from(m.prob) {
            let use_cutmix = if m.mixup_alpha > 0.0 && m.cutmix_alpha > 0.0 {
                rng.uniform_f64() < f64::from(m.switch_prob)
            } else {
                m.cutmix_alpha > 0.0
            };
            let alpha = if use_cutmix {
                m.cutmix_alpha
            } else {
                m.mixup_alpha
            };
            if alpha > 0.0 {
                lam = beta_symmetric(f64::from(alpha), rng);
                let frame_len = channels * height * width;
                let frames = images.len() / (b * frame_len).max(1);
                let orig = images.to_vec();
                if use_cutmix {
                    // timm's rand_bbox + correct_lam.
                    let ratio = (1.0 - lam).sqrt();
                    let (ch, cw) = (
                        (height as f64 * ratio) as usize,
                        (width as f64 * ratio) as usize,
                    );
                    let cy = rng.index(height);
                    let cx = rng.index(width);
                    let (y0, y1) = (cy.saturating_sub(ch / 2), (cy + ch / 2).min(height));
                    let (x0, x1) = (cx.saturating_sub(cw / 2), (cx + cw / 2).min(width));
                    for t in 0..frames {
                        for j in 0..b {
                            let dst = (t * b + j) * frame_len;
                            let src = (t * b + (b - 1 - j)) * frame_len;
                            for c in 0..channels {
                                for y in y0..y1 {
                                    let row = c * height * width + y * width;
                                    images[dst + row + x0..dst + row + x1]
                                        .copy_from_slice(&orig[src + row + x0..src + row + x1]);
                                }
                            }
                        }
                    }
                    lam = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (height * width) as f64;
                } else {
                    let (l, r) = (lam as f32, (1.0 - lam) as f32);
                    for t in 0..frames {
                        for j in 0..b {
                            let dst = (t * b + j) * frame_len;
                            let src = (t * b + (b - 1 - j)) * frame_len;
                            for k in 0..frame_len {
                                images[dst + k] = orig[dst + k] * l + orig[src + k] * r;
                            }
                        }
                    }
                }
            }
        }
    }
    let (l, r) = (lam as f32, (1.0 - lam) as f32);
    let mut targets = Vec::with_capacity(b * classes);
    for j in 0..b {
        let (y1, y2) = (one_hot(labels[j]), one_hot(labels[b - 1 - j]));
        targets.extend(y1.iter().zip(&y2).map(|(a, c)| a * l + c * r));
    }
    targets
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
            ..AugmentConfig::none()
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

    #[test]
    fn mix_targets_sum_to_one_and_match_the_images() {
        let (b, c, h, w, k) = (6, 2, 8, 8, 5);
        let labels: Vec<u16> = (0..b as u16).map(|i| i % 5).collect();
        // Sample j is the constant j + 1 in every pixel, so the mix weight can be read back.
        let base: Vec<f32> = (0..b)
            .flat_map(|j| vec![(j + 1) as f32; c * h * w])
            .collect();
        let (mut mixups, mut cutmixes) = (0, 0);
        for seed in 0..40 {
            let mut images = base.clone();
            let mut rng = Rng::seed_from_u64(seed);
            let t = mix_batch(
                &mut images,
                &labels,
                k,
                (c, h, w),
                Some(MixConfig::TIMM),
                0.1,
                &mut rng,
            );
            assert_eq!(t.len(), b * k);
            for (j, row) in t.chunks(k).enumerate() {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "seed {seed} row {j}: {sum}");
                // Weight of the own label's class (minus smoothing) against the partner's.
                let img = &images[j * c * h * w..(j + 1) * c * h * w];
                let (own, partner) = ((j + 1) as f32, (b - j) as f32);
                if own == partner {
                    continue;
                }
                // Fraction of the image that is the sample's own content.
                let lam: f32 = img
                    .iter()
                    .map(|&v| (v - partner) / (own - partner))
                    .sum::<f32>()
                    / img.len() as f32;
                let is_cut = img.iter().all(|&v| v == own || v == partner);
                if is_cut {
                    cutmixes += 1;
                } else {
                    mixups += 1;
                }
                let (l1, l2) = (usize::from(labels[j]), usize::from(labels[b - 1 - j]));
                if l1 != l2 {
                    let off = 0.1 / k as f32;
                    let want_own = lam * (1.0 - 0.1) + off;
                    assert!(
                        (row[l1] - want_own).abs() < 1e-4,
                        "seed {seed}: {} vs {want_own}",
                        row[l1]
                    );
                }
            }
        }
        assert!(
            mixups > 0 && cutmixes > 0,
            "{mixups} mixup, {cutmixes} cutmix rows"
        );
        // Smoothing only: no image changes, rows are smoothed one-hots.
        let mut images = base.clone();
        let t = mix_batch(
            &mut images,
            &labels,
            k,
            (c, h, w),
            None,
            0.1,
            &mut Rng::seed_from_u64(1),
        );
        assert_eq!(images, base);
        assert!((t[0] - 0.92).abs() < 1e-6 && (t[1] - 0.02).abs() < 1e-6);
    }

    #[test]
    fn beta_has_the_right_mean_and_range() {
        let mut rng = Rng::seed_from_u64(9);
        for a in [0.8, 1.0, 2.5] {
            let n = 4000;
            let xs: Vec<f64> = (0..n).map(|_| beta_symmetric(a, &mut rng)).collect();
            assert!(xs.iter().all(|&x| (0.0..=1.0).contains(&x)));
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            // Beta(a, a): mean ½, variance 1 / (4(2a + 1)).
            assert!((mean - 0.5).abs() < 0.02, "a {a}: mean {mean}");
            assert!(
                (var - 1.0 / (4.0 * (2.0 * a + 1.0))).abs() < 0.01,
                "a {a}: var {var}"
            );
        }
    }

    #[test]
    fn dvs_ops_roll_rotate_and_keep_mass() {
        let (h, w) = (6, 5);
        let plane: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        let mut p = plane.clone();
        roll(&mut p, h, w, 2, -1);
        roll(&mut p, h, w, -2, 1);
        assert_eq!(p, plane, "roll and back");
        let mut p = plane.clone();
        roll(&mut p, h, w, 1, 0);
        assert_eq!(p[w..2 * w], plane[..w]);
        let mut p = plane.clone();
        rotate_f32(&mut p, h, w, 0.0);
        assert_eq!(p, plane);
        // The same transform on every frame: two identical frames stay identical.
        for seed in 0..20 {
            let mut two: Vec<f32> = plane.iter().chain(&plane).copied().collect();
            dvs_augment(
                &mut two,
                h,
                w,
                DvsAugment {
                    roll: 2,
                    rotate_degrees: 30.0,
                    cutout_length: 2,
                },
                &mut Rng::seed_from_u64(seed),
            );
            assert_eq!(two[..h * w], two[h * w..], "seed {seed}");
        }
    }

    #[test]
    fn parse_flags_and_presets() {
        let c = AugmentConfig::parse("crop=4, flip,cutout=1x16").unwrap();
        assert_eq!(c.random_crop, Some(RandomCrop { padding: 4 }));
        assert!(c.hflip);
        assert_eq!(
            c.cutout,
            Some(Cutout {
                holes: 1,
                length: 16
            })
        );
        assert!(!c.soft_targets());
        assert_eq!(AugmentConfig::parse("none").unwrap(), AugmentConfig::none());
        assert_eq!(AugmentConfig::parse("").unwrap(), AugmentConfig::none());
        assert_eq!(
            AugmentConfig::parse("cifar100").unwrap(),
            AugmentConfig::cifar(8)
        );
        let m = AugmentConfig::parse("mixup,smoothing=0.1,autoaugment=imagenet,rrc").unwrap();
        assert!(m.soft_targets() && m.auto_augment == Some(AutoAugmentPolicy::ImageNet));
        for bad in [
            "crop",
            "crop=x",
            "cutout=2x",
            "smoothing=1.5",
            "autoaugment=svhn",
            "blur",
        ] {
            assert!(AugmentConfig::parse(bad).is_err(), "{bad}");
        }
        for preset in [
            AugmentConfig::cifar(16),
            AugmentConfig::tiny_imagenet(),
            AugmentConfig::imagenet(),
        ] {
            assert!(preset.validate(32, 32).is_ok());
        }
        assert!(AugmentConfig::dvs().validate(48, 48).is_ok());
    }
}
