//! 8-bit pixels to network inputs: the normalisation every front end shares.
//!
//! Training normalises a pixel `p` as `(p / 255 − mean) / std` in `f32`. Devices receive raw
//! 8-bit pixels (camera, serial link), so the whole input transform of the integer path is a
//! 256-entry table built once at start-up ([`Model::pixel_table`]); per image it is one lookup
//! per pixel and no float. The table is computed with the same `f32` operations as the host,
//! and IEEE-754 makes them give the same bits on every target (soft-float or FPU).

use crate::{Error, Model};

/// Per-dataset pixel normalisation `x = (p / 255 − mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PixelNorm {
    /// Mean of pixel values scaled to `[0, 1]`.
    pub mean: f32,
    /// Standard deviation of pixel values scaled to `[0, 1]` (finite, non-zero).
    pub std: f32,
}

impl PixelNorm {
    /// Fashion-MNIST: mean 0.2860, std 0.3530.
    pub const FASHION_MNIST: PixelNorm = PixelNorm {
        mean: 0.2860,
        std: 0.3530,
    };
    /// MNIST: mean 0.1307, std 0.3081.
    pub const MNIST: PixelNorm = PixelNorm {
        mean: 0.1307,
        std: 0.3081,
    };
    /// No normalisation beyond scaling to `[0, 1]`.
    pub const UNIT: PixelNorm = PixelNorm {
        mean: 0.0,
        std: 1.0,
    };

    /// The network input for one pixel.
    pub fn apply(&self, pixel: u8) -> f32 {
        (f32::from(pixel) / 255.0 - self.mean) / self.std
    }

    /// Normalises `pixels` into `out` (same length, else [`Error::InferInputLength`]).
    pub fn apply_all(&self, pixels: &[u8], out: &mut [f32]) -> Result<(), Error> {
        if pixels.len() != out.len() {
            return Err(Error::InferInputLength);
        }
        for (o, &p) in out.iter_mut().zip(pixels) {
            *o = self.apply(p);
        }
        Ok(())
    }
}

impl Model<'_> {
    /// The integer-path input of every pixel value: entry `p` is
    /// [`Model::quantize_input`] of [`PixelNorm::apply`]`(p)`. Fails with
    /// [`Error::InferNoFixedPoint`] for a model without an integer path.
    pub fn pixel_table(&self, norm: PixelNorm) -> Result<[i8; 256], Error> {
        let f = self.fixed_meta().ok_or(Error::InferNoFixedPoint)?;
        let mut table = [0i8; 256];
        for (p, q) in (0u8..=255).zip(table.iter_mut()) {
            *q = crate::infer::quantize_one(norm.apply(p), f.input_scale);
        }
        Ok(table)
    }

    /// Integer-path input of an 8-bit image through a table from [`Model::pixel_table`].
    pub fn quantize_pixels(table: &[i8; 256], pixels: &[u8], out: &mut [i8]) -> Result<(), Error> {
        if pixels.len() != out.len() {
            return Err(Error::InferInputLength);
        }
        for (o, &p) in out.iter_mut().zip(pixels) {
            *o = table[usize::from(p)];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_matches_the_training_formula() {
        let n = PixelNorm::FASHION_MNIST;
        assert_eq!(n.apply(0), (0.0 - 0.2860) / 0.3530);
        assert_eq!(n.apply(255), (1.0 - 0.2860) / 0.3530);
        let mut out = [0f32; 3];
        n.apply_all(&[0, 128, 255], &mut out).unwrap();
        assert_eq!(out[1], (128.0 / 255.0 - 0.2860) / 0.3530);
        assert_eq!(n.apply_all(&[0, 1], &mut out), Err(Error::InferInputLength));
    }
}
