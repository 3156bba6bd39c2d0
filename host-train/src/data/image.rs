//! Image decoding (JPEG, PNG) and geometry (resize, crops) on `u8` CHW images.
//!
//! Decoders: `zune-jpeg` for JPEG, the `png` crate for PNG; both are told the most pixels they
//! may produce ([`MAX_PIXELS`]) before anything is allocated, so a lying header cannot make a
//! huge allocation. Greyscale and palette images become RGB when three channels are asked for;
//! alpha is dropped (ImageNet has a few CMYK and greyscale JPEGs: they are converted, not
//! refused).
//!
//! Resize is PIL's antialiased bilinear (the triangle filter widened by the downscale factor,
//! separable, rows then columns), which torchvision applies to PIL images; fixed-point-free, in
//! `f32`, deterministic.

use std::path::Path;

use super::{DataError, ImageU8};
use crate::rng::Rng;

/// Most pixels a decoded image may have (ImageNet's largest are about 10⁷).
pub const MAX_PIXELS: usize = 1 << 26;

/// Most bytes of an image file that are read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

fn decode_error(path: &Path, reason: impl std::fmt::Display) -> DataError {
    DataError::Decode {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads and decodes a JPEG or PNG file (told apart by its first bytes) into `channels`
/// channels (1 or 3).
pub fn decode_file(path: &Path, channels: usize) -> Result<ImageU8, DataError> {
    let bytes = super::read_bounded(path, MAX_FILE_BYTES)?;
    decode(&bytes, channels, path)
}

/// Decodes JPEG or PNG bytes; `path` names the source in errors.
pub fn decode(bytes: &[u8], channels: usize, path: &Path) -> Result<ImageU8, DataError> {
    if !(channels == 1 || channels == 3) {
        return Err(decode_error(path, format!("{channels} channels asked for")));
    }
    let (hwc, src_channels, h, w) = if bytes.starts_with(&[0xff, 0xd8]) {
        decode_jpeg(bytes, path)?
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, path)?
    } else {
        return Err(decode_error(path, "neither a JPEG nor a PNG file"));
    };
    Ok(to_chw(&hwc, src_channels, h, w, channels))
}

fn decode_jpeg(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let side = 1 << 15;
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(side)
        .set_max_height(side);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    dec.decode_headers().map_err(|e| decode_error(path, e))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| decode_error(path, "no dimensions"))?;
    if w == 0 || h == 0 || w.saturating_mul(h) > MAX_PIXELS {
        return Err(decode_error(path, format!("{w}x{h} pixels")));
    }
    let px = dec.decode().map_err(|e| decode_error(path, e))?;
    if px.len() != w * h * 3 {
        return Err(decode_error(
            path,
            format!("{} bytes for {w}x{h} RGB", px.len()),
        ));
    }
    Ok((px, 3, h, w))
}

fn decode_png(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, usize, usize, usize), DataError> {
    let mut dec = png::Decoder::new_with_limits(
        bytes,
        png::Limits {
            bytes: MAX_PIXELS * 4,
        },
    );
    // Palette → RGB, 16-bit → 8-bit, low bit depths → 8-bit.
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(|e| decode_error(path, e))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| decode_error(path, e))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let c = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(decode_error(path, "palette not expanded")),
    };
    if w == 0 || h == 0 || w * h > MAX_PIXELS {
        return Err(decode_error(path, format!("{w}x{h} pixels")));
    }
    buf.truncate(info.buffer_size());
    if buf.len() != w * h * c {
        return Err(decode_error(
            path,
            format!("{} bytes for {w}x{h}x{c}", buf.len()),
        ));
    }
    Ok((buf, c, h, w))
}

/// Interleaved `src_c`-channel pixels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) to planar `out_c`.
fn to_chw(hwc: &[u8], src_c: usize, h: usize, w: usize, out_c: usize) -> ImageU8 {
    let mut img = ImageU8::zeros(out_c, h, w);
    let n = h * w;
    for (i, px) in hwc.chunks_exact(src_c).enumerate().take(n) {
        let rgb = match src_c {
            1 | 2 => [px[0]; 3],
            _ => [px[0], px[1], px[2]],
        };
        if out_c == 3 {
            for (c, &v) in rgb.iter().enumerate() {
                img.data[c * n + i] = v;
            }
        } else {
            let [r, g, b] = rgb.map(u32::from);
            img.data[i] = ((299 * r + 587 * g + 114 * b + 500) / 1000) as u8;
        }
    }
    img
}

/// Antialiased bilinear resize to `out_h × out_w` (see the module docs).
pub fn resize(img: &ImageU8, out_h: usize, out_w: usize) -> ImageU8 {
    if (img.height, img.width) == (out_h, out_w) {
        return img.clone();
    }
    let (h, w) = (img.height, img.width);
    let wx = weights(w, out_w);
    let wy = weights(h, out_h);
    let mut out = ImageU8::zeros(img.channels, out_h, out_w);
    let mut rows = vec![0f32; h * out_w];
    for c in 0..img.channels {
        let src = img.plane(c);
        for y in 0..h {
            for (x, (start, ws)) in wx.iter().enumerate() {
                let line = &src[y * w + start..];
                rows[y * out_w + x] = ws.iter().zip(line).map(|(k, &p)| k * f32::from(p)).sum();
            }
        }
        let dst = out.plane_mut(c);
        for (y, (start, ws)) in wy.iter().enumerate() {
            for x in 0..out_w {
                let v: f32 = ws
                    .iter()
                    .enumerate()
                    .map(|(k, wgt)| wgt * rows[(start + k) * out_w + x])
                    .sum();
                dst[y * out_w + x] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Antialiased bilinear resize of one `f32` plane (event counts: no rounding or clipping), the
/// same filter as [`resize`].
pub fn resize_plane_f32(src: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    if (h, w) == (out_h, out_w) {
        return src.to_vec();
    }
    let wx = weights(w, out_w);
    let wy = weights(h, out_h);
    let mut rows = vec![0f32; h * out_w];
    for y in 0..h {
        for (x, (start, ws)) in wx.iter().enumerate() {
            let line = &src[y * w + start..];
            rows[y * out_w + x] = ws.iter().zip(line).map(|(k, &p)| k * p).sum();
        }
    }
    let mut out = vec![0f32; out_h * out_w];
    for (y, (start, ws)) in wy.iter().enumerate() {
        for x in 0..out_w {
            out[y * out_w + x] = ws
                .iter()
                .enumerate()
                .map(|(k, wgt)| wgt * rows[(start + k) * out_w + x])
                .sum();
        }
    }
    out
}

/// For each output index, the first input index and the normalised triangle weights (PIL's
/// `precompute_coeffs` with the bilinear filter: support `max(1, in/out)`).
fn weights(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f64 / output as f64;
    let support = scale.max(1.0);
    (0..output)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = (((centre + support).ceil()) as usize).min(input);
            let mut ws: Vec<f64> = (lo..hi)
                .map(|j| {
                    let d = (j as f64 + 0.5 - centre) / support;
                    (1.0 - d.abs()).max(0.0)
                })
                .collect();
            let sum: f64 = ws.iter().sum();
            if sum > 0.0 {
                ws.iter_mut().for_each(|v| *v /= sum);
            } else {
                ws = vec![1.0];
            }
            (lo, ws.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// The `h × w` window at `(top, left)` (must lie inside the image).
pub fn crop(img: &ImageU8, top: usize, left: usize, h: usize, w: usize) -> ImageU8 {
    let mut out = ImageU8::zeros(img.channels, h, w);
    for c in 0..img.channels {
        let src = img.plane(c);
        let dst = out.plane_mut(c);
        for y in 0..h {
            let s = (top + y) * img.width + left;
            dst[y * w..(y + 1) * w].copy_from_slice(&src[s..s + w]);
        }
    }
    out
}

/// Evaluation geometry: resize the shorter side to `⌊size / 0.875⌋` (256 for 224) and cut the
/// centre `size × size`; an image already `size × size` is returned as it is.
pub fn resize_center_crop(img: &ImageU8, out_h: usize, out_w: usize) -> ImageU8 {
    if (img.height, img.width) == (out_h, out_w) {
        return img.clone();
    }
    let target = ((out_h.max(out_w) as f64) / 0.875) as usize;
    let (h, w) = (img.height, img.width);
    let (rh, rw) = if h <= w {
        (target, ((w * target) as f64 / h as f64).round() as usize)
    } else {
        (((h * target) as f64 / w as f64).round() as usize, target)
    };
    let (rh, rw) = (rh.max(out_h), rw.max(out_w));
    let r = resize(img, rh, rw);
    crop(&r, (rh - out_h) / 2, (rw - out_w) / 2, out_h, out_w)
}

/// torchvision `RandomResizedCrop`: up to 10 tries of area fraction `U(scale)` and log-uniform
/// aspect ratio in `ratio`; the window is resized to `out_h × out_w`. If no try fits, the
/// central crop of the clamped ratio (torchvision's fallback).
pub fn random_resized_crop(
    img: &ImageU8,
    out_h: usize,
    out_w: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut Rng,
) -> ImageU8 {
    let (h, w) = (img.height as f64, img.width as f64);
    let area = h * w;
    let (lr0, lr1) = (f64::from(ratio.0).ln(), f64::from(ratio.1).ln());
    for _ in 0..10 {
        let target = area * (f64::from(scale.0) + f64::from(scale.1 - scale.0) * rng.uniform_f64());
        let aspect = (lr0 + (lr1 - lr0) * rng.uniform_f64()).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= img.width && ch <= img.height {
            let top = rng.index(img.height - ch + 1);
            let left = rng.index(img.width - cw + 1);
            return resize(&crop(img, top, left, ch, cw), out_h, out_w);
        }
    }
    let in_ratio = w / h;
    let (cw, ch) = if in_ratio < f64::from(ratio.0) {
        (img.width, (w / f64::from(ratio.0)).round() as usize)
    } else if in_ratio > f64::from(ratio.1) {
        ((h * f64::from(ratio.1)).round() as usize, img.height)
    } else {
        (img.width, img.height)
    };
    let (cw, ch) = (cw.clamp(1, img.width), ch.clamp(1, img.height));
    let top = (img.height - ch) / 2;
    let left = (img.width - cw) / 2;
    resize(&crop(img, top, left, ch, cw), out_h, out_w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(c: usize, h: usize, w: usize) -> ImageU8 {
        ImageU8 {
            channels: c,
            height: h,
            width: w,
            data: (0..c * h * w).map(|i| (i * 5 % 256) as u8).collect(),
        }
    }

    #[test]
    fn resize_identity_constant_and_halving() {
        let img = ramp(3, 6, 8);
        assert_eq!(resize(&img, 6, 8), img);
        let flat = ImageU8 {
            channels: 1,
            height: 7,
            width: 9,
            data: vec![77; 63],
        };
        let r = resize(&flat, 3, 4);
        assert!(r.data.iter().all(|&v| v == 77), "{:?}", r.data);
        let r = resize(&flat, 20, 30);
        assert!(r.data.iter().all(|&v| v == 77));
        // Halving averages 2×2 blocks (support 2, triangle weights ¼ ¾ ¾ ¼ around each centre).
        let two = ImageU8 {
            channels: 1,
            height: 2,
            width: 4,
            data: vec![0, 100, 200, 200, 0, 100, 200, 200],
        };
        let r = resize(&two, 1, 2);
        // Output column 0 (centre 1.0, support 2): inputs 0, 1, 2 weighted ¾, ¾, ¼, normalised.
        assert_eq!(r.data[0], ((300.0f32 + 200.0) / 7.0).round() as u8);
    }

    #[test]
    fn crops_and_center_crop() {
        let img = ramp(2, 5, 6);
        let c = crop(&img, 1, 2, 3, 3);
        assert_eq!(c.plane(1)[0], img.plane(1)[6 + 2]);
        assert_eq!(resize_center_crop(&img, 5, 6), img);
        let big = ramp(3, 300, 400);
        let cc = resize_center_crop(&big, 224, 224);
        assert_eq!((cc.channels, cc.height, cc.width), (3, 224, 224));
        for seed in 0..20 {
            let r = random_resized_crop(
                &big,
                64,
                64,
                (0.08, 1.0),
                (0.75, 4.0 / 3.0),
                &mut Rng::seed_from_u64(seed),
            );
            assert_eq!((r.height, r.width), (64, 64));
        }
        // Impossible ratio range: falls back to the centre crop, never panics.
        let thin = ramp(1, 2, 50);
        let r = random_resized_crop(
            &thin,
            8,
            8,
            (0.9, 1.0),
            (1.0, 1.0),
            &mut Rng::seed_from_u64(3),
        );
        assert_eq!((r.height, r.width), (8, 8));
    }

    fn jpeg(w: u16, h: u16, rgb: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let enc = jpeg_encoder::Encoder::new(&mut out, 95);
        enc.encode(rgb, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
        out
    }

    pub(crate) fn png_bytes(w: u32, h: u32, color: png::ColorType, px: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(color);
            enc.set_depth(png::BitDepth::Eight);
            let mut wr = enc.write_header().unwrap();
            wr.write_image_data(px).unwrap();
        }
        out
    }

    #[test]
    fn decodes_jpeg_and_png_and_refuses_garbage() {
        let p = Path::new("x.img");
        let (w, h) = (16u16, 8u16);
        let rgb: Vec<u8> = (0..w as usize * h as usize)
            .flat_map(|_| [200u8, 30, 90])
            .collect();
        let img = decode(&jpeg(w, h, &rgb), 3, p).unwrap();
        assert_eq!((img.channels, img.height, img.width), (3, 8, 16));
        // Lossy, but a flat colour survives within a few levels.
        for (c, want) in [200i32, 30, 90].iter().enumerate() {
            assert!(img
                .plane(c)
                .iter()
                .all(|&v| (i32::from(v) - want).abs() <= 4));
        }
        let grey = decode(&jpeg(w, h, &rgb), 1, p).unwrap();
        assert_eq!(grey.channels, 1);
        // PNG: exact, grey → RGB broadcast, RGBA drops alpha.
        let px: Vec<u8> = (0..12).collect();
        let g = decode(&png_bytes(4, 3, png::ColorType::Grayscale, &px), 3, p).unwrap();
        assert_eq!(g.plane(0), &px[..]);
        assert_eq!(g.plane(2), &px[..]);
        let rgba: Vec<u8> = (0..24).collect();
        let c = decode(&png_bytes(3, 2, png::ColorType::Rgba, &rgba), 3, p).unwrap();
        assert_eq!(c.plane(0), &[0, 4, 8, 12, 16, 20]);
        assert_eq!(c.plane(2), &[2, 6, 10, 14, 18, 22]);
        // Garbage, truncated files and an absurd header: errors naming the file.
        let good = jpeg(w, h, &rgb);
        for bad in [
            b"hello".to_vec(),
            good[..good.len() / 2].to_vec(),
            good[..20].to_vec(),
            png_bytes(4, 3, png::ColorType::Grayscale, &px)[..30].to_vec(),
        ] {
            match decode(&bad, 3, p) {
                Err(e) => assert!(e.to_string().contains("x.img"), "{e}"),
                // zune-jpeg fills a cut scan with grey rather than failing; it must keep the size.
                Ok(img) => assert_eq!((img.height, img.width), (8, 16)),
            }
        }
        let mut huge = png_bytes(4, 3, png::ColorType::Grayscale, &px);
        // IHDR width at bytes 16..20: claim 2^30 × 3 pixels.
        huge[16..20].copy_from_slice(&(1u32 << 30).to_be_bytes());
        assert!(decode(&huge, 3, p).is_err());
    }
}
