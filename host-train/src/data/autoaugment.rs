//! AutoAugment (Cubuk et al. 2019) with the CIFAR-10 and ImageNet policies as the widely used
//! PIL implementation defines them (25 sub-policies each; magnitudes on a 0–9 scale; fill grey
//! 128), on `u8` CHW images.
//!
//! A sub-policy is two `(probability, operation, magnitude)` steps; [`AutoAugmentPolicy::apply`]
//! draws one sub-policy uniformly, then each step runs with its probability. Magnitude `m` maps to:
//! shear `0.3·m/9`, translate `(150/331)·m/9` of the side, rotate `30·m/9` degrees, colour /
//! contrast / brightness / sharpness factor `1 ± 0.9·m/9`, posterize to `round(8 − 4m/9)` bits,
//! solarize threshold `256 − 256·m/9` (pixels at or above it inverted). Signs (`±`) are drawn per application; rotation is
//! counter-clockwise by the magnitude with no sign draw, as in that implementation.
//!
//! Each operation follows PIL's definition: `ImageEnhance` blends with a degenerate image
//! (grey version, mean grey, black, 3×3 smoothed), `ImageOps.equalize/autocontrast` per channel.
//! Deviation, stated: the affine ops (shear, translate) sample bilinearly where PIL uses bicubic;
//! rotate uses nearest, as PIL's default.

use super::ImageU8;
use crate::rng::Rng;

/// The operations of the AutoAugment search space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `x ← x + s·y` (horizontal shear).
    ShearX,
    /// `y ← y + s·x`.
    ShearY,
    /// Horizontal shift by a fraction of the width.
    TranslateX,
    /// Vertical shift.
    TranslateY,
    /// Counter-clockwise rotation about the centre.
    Rotate,
    /// Stretch each channel's range to 0–255.
    AutoContrast,
    /// `255 − x`.
    Invert,
    /// Per-channel histogram equalisation.
    Equalize,
    /// Invert pixels at or above a threshold.
    Solarize,
    /// Keep the top bits.
    Posterize,
    /// Blend with the mean grey.
    Contrast,
    /// Blend with the grey version (saturation).
    Color,
    /// Blend with black.
    Brightness,
    /// Blend with a smoothed version.
    Sharpness,
}

/// Fill of the geometric ops (PIL policy's `fillcolor=(128, 128, 128)`).
pub const FILL: u8 = 128;

/// One step of a sub-policy: (probability, operation, magnitude 0–9).
pub type Step = (f32, Op, u8);

use Op::*;

const CIFAR10: [(Step, Step); 25] = [
    ((0.1, Invert, 7), (0.2, Contrast, 6)),
    ((0.7, Rotate, 2), (0.3, TranslateX, 9)),
    ((0.8, Sharpness, 1), (0.9, Sharpness, 3)),
    ((0.5, ShearY, 8), (0.7, TranslateY, 9)),
    ((0.5, AutoContrast, 8), (0.9, Equalize, 2)),
    ((0.2, ShearY, 7), (0.3, Posterize, 7)),
    ((0.4, Color, 3), (0.6, Brightness, 7)),
    ((0.3, Sharpness, 9), (0.7, Brightness, 9)),
    ((0.6, Equalize, 5), (0.5, Equalize, 1)),
    ((0.6, Contrast, 7), (0.6, Sharpness, 5)),
    ((0.7, Color, 7), (0.5, TranslateX, 8)),
    ((0.3, Equalize, 7), (0.4, AutoContrast, 8)),
    ((0.4, TranslateY, 3), (0.2, Sharpness, 6)),
    ((0.9, Brightness, 6), (0.2, Color, 8)),
    ((0.5, Solarize, 2), (0.0, Invert, 3)),
    ((0.2, Equalize, 0), (0.6, AutoContrast, 0)),
    ((0.2, Equalize, 8), (0.6, Equalize, 4)),
    ((0.9, Color, 9), (0.6, Equalize, 6)),
    ((0.8, AutoContrast, 4), (0.2, Solarize, 8)),
    ((0.1, Brightness, 3), (0.7, Color, 0)),
    ((0.4, Solarize, 5), (0.9, AutoContrast, 3)),
    ((0.9, TranslateY, 9), (0.7, TranslateY, 9)),
    ((0.9, AutoContrast, 2), (0.8, Solarize, 3)),
    ((0.8, Equalize, 8), (0.1, Invert, 3)),
    ((0.7, TranslateY, 9), (0.9, AutoContrast, 1)),
];

const IMAGENET: [(Step, Step); 25] = [
    ((0.4, Posterize, 8), (0.6, Rotate, 9)),
    ((0.6, Solarize, 5), (0.6, AutoContrast, 5)),
    ((0.8, Equalize, 8), (0.6, Equalize, 3)),
    ((0.6, Posterize, 7), (0.6, Posterize, 6)),
    ((0.4, Equalize, 7), (0.2, Solarize, 4)),
    ((0.4, Equalize, 4), (0.8, Rotate, 8)),
    ((0.6, Solarize, 3), (0.6, Equalize, 7)),
    ((0.8, Posterize, 5), (1.0, Equalize, 2)),
    ((0.2, Rotate, 3), (0.6, Solarize, 8)),
    ((0.6, Equalize, 8), (0.4, Posterize, 6)),
    ((0.8, Rotate, 8), (0.4, Color, 0)),
    ((0.4, Rotate, 9), (0.6, Equalize, 2)),
    ((0.0, Equalize, 7), (0.8, Equalize, 8)),
    ((0.6, Invert, 4), (1.0, Equalize, 8)),
    ((0.6, Color, 4), (1.0, Contrast, 8)),
    ((0.8, Rotate, 8), (1.0, Color, 2)),
    ((0.8, Color, 8), (0.8, Solarize, 7)),
    ((0.4, Sharpness, 7), (0.6, Invert, 8)),
    ((0.6, ShearX, 5), (1.0, Equalize, 9)),
    ((0.4, Color, 0), (0.6, Equalize, 3)),
    ((0.4, Equalize, 7), (0.2, Solarize, 4)),
    ((0.6, Solarize, 5), (0.6, AutoContrast, 5)),
    ((0.6, Invert, 4), (1.0, Equalize, 8)),
    ((0.6, Color, 4), (1.0, Contrast, 8)),
    ((0.8, Equalize, 8), (0.6, Equalize, 3)),
];

/// Which learned policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutoAugmentPolicy {
    /// The CIFAR-10 policy (CIFAR-10/100 in the paper's pipeline).
    Cifar10,
    /// The ImageNet policy (Tiny-ImageNet in the paper's pipeline).
    ImageNet,
}

impl AutoAugmentPolicy {
    /// The 25 sub-policies.
    pub fn sub_policies(self) -> &'static [(Step, Step); 25] {
        match self {
            AutoAugmentPolicy::Cifar10 => &CIFAR10,
            AutoAugmentPolicy::ImageNet => &IMAGENET,
        }
    }

    /// Draws a sub-policy and applies it (draws: sub-policy index, then per step `u < p`, then
    /// the op's own sign draw if it has one).
    pub fn apply(self, img: &mut ImageU8, rng: &mut Rng) {
        let subs = self.sub_policies();
        let (a, b) = subs[rng.index(subs.len())];
        for (p, op, m) in [a, b] {
            if rng.uniform_f32() < p {
                apply_op(img, op, m, rng);
            }
        }
    }
}

fn sign(rng: &mut Rng) -> f32 {
    if rng.below(2) == 0 {
        -1.0
    } else {
        1.0
    }
}

/// Applies one operation at magnitude `m` (0–9; see the module docs).
pub fn apply_op(img: &mut ImageU8, op: Op, m: u8, rng: &mut Rng) {
    let mag = m.min(9);
    let m = f32::from(mag) / 9.0;
    match op {
        ShearX => {
            let s = 0.3 * m * sign(rng);
            affine(img, [1.0, s, 0.0, 0.0, 1.0, 0.0]);
        }
        ShearY => {
            let s = 0.3 * m * sign(rng);
            affine(img, [1.0, 0.0, 0.0, s, 1.0, 0.0]);
        }
        TranslateX => {
            let t = 150.0 / 331.0 * m * img.width as f32 * sign(rng);
            affine(img, [1.0, 0.0, t, 0.0, 1.0, 0.0]);
        }
        TranslateY => {
            let t = 150.0 / 331.0 * m * img.height as f32 * sign(rng);
            affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, t]);
        }
        Rotate => rotate(img, 30.0 * m),
        AutoContrast => autocontrast(img),
        Invert => img.data.iter_mut().for_each(|p| *p = 255 - *p),
        Equalize => equalize(img),
        // PIL inverts `p ≥ thr` for the float threshold 256·(9 − mag)/9: the integer threshold
        // is its ceiling, computed exactly.
        Solarize => solarize(img, (256 * (9 - u32::from(mag))).div_ceil(9)),
        Posterize => posterize(img, (8.0 - 4.0 * m).round() as u32),
        Contrast => contrast(img, 1.0 + 0.9 * m * sign(rng)),
        Color => color(img, 1.0 + 0.9 * m * sign(rng)),
        Brightness => {
            let f = 1.0 + 0.9 * m * sign(rng);
            let black = vec![0u8; img.data.len()];
            blend(&mut img.data, &black, f);
        }
        Sharpness => sharpness(img, 1.0 + 0.9 * m * sign(rng)),
    }
}

/// PIL's `Image.blend(degenerate, img, f)`: `d + f·(x − d)`, rounded and clipped.
fn blend(img: &mut [u8], degenerate: &[u8], f: f32) {
    for (x, &d) in img.iter_mut().zip(degenerate) {
        let v = f32::from(d) + f * (f32::from(*x) - f32::from(d));
        *x = v.round().clamp(0.0, 255.0) as u8;
    }
}

/// ITU-R 601-2 luma as PIL's `convert("L")`: `(299 R + 587 G + 114 B) / 1000`, rounded.
fn luma(img: &ImageU8) -> Vec<u8> {
    if img.channels != 3 {
        return img.plane(0).to_vec();
    }
    let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
    r.iter()
        .zip(g)
        .zip(b)
        .map(|((&r, &g), &b)| {
            ((299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000) as u8
        })
        .collect()
}

/// Saturation: blend with the grey image in every channel (a grey image is unchanged).
pub fn color(img: &mut ImageU8, f: f32) {
    if img.channels != 3 {
        return;
    }
    let grey = luma(img);
    for c in 0..3 {
        blend(img.plane_mut(c), &grey, f);
    }
}

/// Blend with a uniform image at the mean luma (rounded).
pub fn contrast(img: &mut ImageU8, f: f32) {
    let grey = luma(img);
    let mean = grey.iter().map(|&v| u64::from(v)).sum::<u64>() as f64 / grey.len().max(1) as f64;
    let degenerate = vec![(mean + 0.5) as u8; img.data.len()];
    blend(&mut img.data, &degenerate, f);
}

/// Blend with the image smoothed by PIL's SMOOTH kernel `[1 1 1; 1 5 1; 1 1 1] / 13`; border
/// pixels keep their value in the degenerate image, as in PIL.
pub fn sharpness(img: &mut ImageU8, f: f32) {
    let (h, w) = (img.height, img.width);
    let mut degenerate = img.data.clone();
    if h >= 3 && w >= 3 {
        for c in 0..img.channels {
            let src = img.plane(c);
            let dst = &mut degenerate[c * h * w..(c + 1) * h * w];
            for y in 1..h - 1 {
                for x in 1..w - 1 {
                    let mut s = 4 * u32::from(src[y * w + x]);
                    for dy in 0..3 {
                        for dx in 0..3 {
                            s += u32::from(src[(y + dy - 1) * w + x + dx - 1]);
                        }
                    }
                    dst[y * w + x] = ((s + 6) / 13) as u8;
                }
            }
        }
    }
    blend(&mut img.data, &degenerate, f);
}

/// Per channel: map `[lo, hi]` linearly onto `[0, 255]` (unchanged when `lo == hi`).
pub fn autocontrast(img: &mut ImageU8) {
    for c in 0..img.channels {
        let plane = img.plane_mut(c);
        let lo = plane.iter().copied().min().unwrap_or(0);
        let hi = plane.iter().copied().max().unwrap_or(255);
        if hi <= lo {
            continue;
        }
        let scale = 255.0 / f32::from(hi - lo);
        let offset = -f32::from(lo) * scale;
        for p in plane.iter_mut() {
            *p = (f32::from(*p) * scale + offset).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// PIL's `ImageOps.equalize`, per channel: `step = (N − count of the last used level) / 255`;
/// `lut[v] = (n_below(v) + step/2) / step` (identity when `step == 0`).
pub fn equalize(img: &mut ImageU8) {
    for c in 0..img.channels {
        let plane = img.plane_mut(c);
        let mut hist = [0usize; 256];
        for &p in plane.iter() {
            hist[usize::from(p)] += 1;
        }
        let last = hist.iter().rposition(|&n| n > 0).map_or(0, |i| hist[i]);
        let step = (plane.len() - last) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut n = step / 2;
        for (v, slot) in lut.iter_mut().enumerate() {
            *slot = (n / step).min(255) as u8;
            n += hist[v];
        }
        for p in plane.iter_mut() {
            *p = lut[usize::from(*p)];
        }
    }
}

/// Inverts every pixel `≥ threshold` (256 leaves the image unchanged).
pub fn solarize(img: &mut ImageU8, threshold: u32) {
    for p in img.data.iter_mut() {
        if u32::from(*p) >= threshold {
            *p = 255 - *p;
        }
    }
}

/// Keeps the top `bits` bits (8 = unchanged).
pub fn posterize(img: &mut ImageU8, bits: u32) {
    let bits = bits.min(8);
    let mask = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    img.data.iter_mut().for_each(|p| *p &= mask);
}

/// PIL `Image.transform(AFFINE, (a, b, c, d, e, f))`: output pixel `(x, y)` (centre at
/// `+½`) samples input `(a·x + b·y + c, d·x + e·y + f)`, bilinearly, grey [`FILL`] outside.
pub fn affine(img: &mut ImageU8, m: [f32; 6]) {
    let (h, w) = (img.height, img.width);
    let mut out = vec![FILL; img.data.len()];
    for c in 0..img.channels {
        let src = img.plane(c);
        let dst = &mut out[c * h * w..(c + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f32 + 0.5, y as f32 + 0.5);
                let sx = m[0] * xf + m[1] * yf + m[2] - 0.5;
                let sy = m[3] * xf + m[4] * yf + m[5] - 0.5;
                if let Some(v) = bilinear(src, h, w, sx, sy) {
                    dst[y * w + x] = v;
                }
            }
        }
    }
    img.data = out;
}

/// Bilinear sample at `(sx, sy)` (pixel centres at integers); `None` outside the image (the
/// half-pixel border samples its edge pixels).
fn bilinear(src: &[u8], h: usize, w: usize, sx: f32, sy: f32) -> Option<u8> {
    if !(sx > -0.5 && sy > -0.5 && sx < w as f32 - 0.5 && sy < h as f32 - 0.5) {
        return None;
    }
    let sx = sx.clamp(0.0, (w - 1) as f32);
    let sy = sy.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
    let p = |y: usize, x: usize| f32::from(src[y * w + x]);
    let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
    let bot = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
    Some((top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8)
}

/// PIL `rotate(degrees)` (counter-clockwise about the centre, nearest neighbour, same size),
/// grey [`FILL`] where the rotated image does not reach.
pub fn rotate(img: &mut ImageU8, degrees: f32) {
    let (h, w) = (img.height, img.width);
    let a = -f64::from(degrees).to_radians();
    let (cos, sin) = (a.cos(), a.sin());
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let mut out = vec![FILL; img.data.len()];
    for c in 0..img.channels {
        let src = img.plane(c);
        let dst = &mut out[c * h * w..(c + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                let sx = cos * dx + sin * dy + cx;
                let sy = -sin * dx + cos * dy + cy;
                if sx >= 0.0 && sy >= 0.0 && sx < w as f64 && sy < h as f64 {
                    dst[y * w + x] = src[sy as usize * w + sx as usize];
                }
            }
        }
    }
    img.data = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(c: usize, h: usize, w: usize) -> ImageU8 {
        ImageU8 {
            channels: c,
            height: h,
            width: w,
            data: (0..c * h * w)
                .map(|i| ((i * 37 + i / 5) % 200 + 20) as u8)
                .collect(),
        }
    }

    #[test]
    fn identities_at_neutral_settings() {
        let orig = img(3, 6, 7);
        let mut x = orig.clone();
        apply_op(&mut x, Invert, 0, &mut Rng::seed_from_u64(0));
        assert_ne!(x, orig);
        apply_op(&mut x, Invert, 0, &mut Rng::seed_from_u64(0));
        assert_eq!(x, orig, "invert twice");
        for (f, name) in [
            (
                &(|i: &mut ImageU8| affine(i, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
                    as &dyn Fn(&mut ImageU8),
                "affine identity",
            ),
            (&|i: &mut ImageU8| rotate(i, 0.0), "rotate 0"),
            (&|i: &mut ImageU8| solarize(i, 256), "solarize 256"),
            (&|i: &mut ImageU8| posterize(i, 8), "posterize 8"),
            (&|i: &mut ImageU8| contrast(i, 1.0), "contrast 1"),
            (&|i: &mut ImageU8| color(i, 1.0), "color 1"),
            (&|i: &mut ImageU8| sharpness(i, 1.0), "sharpness 1"),
        ] {
            let mut x = orig.clone();
            f(&mut x);
            assert_eq!(x, orig, "{name}");
        }
        // A grey image has no colour to change.
        let grey = img(1, 5, 5);
        let mut x = grey.clone();
        color(&mut x, 0.1);
        assert_eq!(x, grey);
    }

    #[test]
    fn ops_against_plain_references() {
        let orig = img(1, 4, 4);
        // Rotation by 90° counter-clockwise: out(y, x) = in(x, w − 1 − y).
        let mut x = orig.clone();
        rotate(&mut x, 90.0);
        for y in 0..4 {
            for xx in 0..4 {
                assert_eq!(x.data[y * 4 + xx], orig.data[xx * 4 + 3 - y], "({y},{xx})");
            }
        }
        // Integer translation: out(x) = in(x + t), grey beyond.
        let mut x = orig.clone();
        affine(&mut x, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        for y in 0..4 {
            assert_eq!(x.data[y * 4..y * 4 + 3], orig.data[y * 4 + 1..y * 4 + 4]);
            assert_eq!(x.data[y * 4 + 3], FILL);
        }
        // Autocontrast stretches [20, 219] to [0, 255]; posterize 1 bit; solarize at 128.
        let mut x = orig.clone();
        autocontrast(&mut x);
        assert_eq!(x.data.iter().min(), Some(&0));
        assert_eq!(x.data.iter().max(), Some(&255));
        let mut x = orig.clone();
        posterize(&mut x, 1);
        assert!(x.data.iter().all(|&v| v == 0 || v == 128));
        let mut x = orig.clone();
        solarize(&mut x, 128);
        for (a, &b) in x.data.iter().zip(&orig.data) {
            assert_eq!(*a, if b >= 128 { 255 - b } else { b });
        }
        // Brightness 0 is black; contrast 0 is the mean grey everywhere.
        let mut x = orig.clone();
        let black = vec![0u8; 16];
        blend(&mut x.data, &black, 0.0);
        assert!(x.data.iter().all(|&v| v == 0));
        let mut x = orig.clone();
        contrast(&mut x, 0.0);
        let mean = orig.data.iter().map(|&v| f64::from(v)).sum::<f64>() / 16.0;
        assert!(x.data.iter().all(|&v| v == (mean + 0.5) as u8));
    }

    #[test]
    fn solarize_thresholds_match_the_float_comparison() {
        for mag in 0u8..=9 {
            let thr = 256.0 * f64::from(9 - mag) / 9.0;
            let mut x = ImageU8 {
                channels: 1,
                height: 1,
                width: 256,
                data: (0..=255).collect(),
            };
            apply_op(&mut x, Solarize, mag, &mut Rng::seed_from_u64(0));
            for (p, &v) in x.data.iter().enumerate() {
                let want = if p as f64 >= thr {
                    255 - p as u8
                } else {
                    p as u8
                };
                assert_eq!(v, want, "magnitude {mag}, pixel {p}");
            }
        }
    }

    #[test]
    fn equalize_spreads_a_narrow_histogram() {
        // Four levels, equally frequent.
        let mut x = ImageU8 {
            channels: 1,
            height: 4,
            width: 64,
            data: (0..256).map(|i| 100 + (i % 4) as u8).collect(),
        };
        equalize(&mut x);
        let mut levels: Vec<u8> = x.data.clone();
        levels.sort_unstable();
        levels.dedup();
        // step = (256 − 64) / 255 = 0: too few pixels to equalise, PIL leaves it unchanged.
        assert_eq!(levels, [100, 101, 102, 103]);
        let mut big = ImageU8 {
            channels: 1,
            height: 32,
            width: 64,
            data: (0..2048).map(|i| 100 + (i % 4) as u8).collect(),
        };
        equalize(&mut big);
        let mut levels: Vec<u8> = big.data.clone();
        levels.sort_unstable();
        levels.dedup();
        // step = (2048 − 512) / 255 = 6: lut = (n + 3) / 6 for n = 0, 512, 1024, 1536.
        assert_eq!(levels, [0, 85, 171, 255]);
    }

    #[test]
    fn policies_are_deterministic_and_keep_the_shape() {
        for policy in [AutoAugmentPolicy::Cifar10, AutoAugmentPolicy::ImageNet] {
            assert_eq!(policy.sub_policies().len(), 25);
            let mut changed = 0;
            for seed in 0..60 {
                let orig = img(3, 8, 8);
                let (mut a, mut b) = (orig.clone(), orig.clone());
                policy.apply(&mut a, &mut Rng::seed_from_u64(seed));
                policy.apply(&mut b, &mut Rng::seed_from_u64(seed));
                assert_eq!(a, b);
                assert_eq!(a.data.len(), orig.data.len());
                changed += usize::from(a != orig);
            }
            assert!(changed > 30, "{policy:?} changed only {changed} of 60");
        }
    }
}
