//! im2col and its adjoint col2im, the data-layout primitives of the convolutions.
//!
//! Shape vocabulary (see `layers::conv2d` for the full list):
//! ```text
//!   B batch, C input channels, H×W input plane, O output channels, k kernel side, S stride, P pad,
//!   OH×OW output plane, K = C·k·k (im2col rows), N = B·OH·OW (im2col columns).
//!   x [C][B][H][W] (CBHW), col [K][N] with row r = (c, ky, kx), column j = (b, oy, ox).
//! ```
//!
//! Parallelism is over independent outputs only (rows / planes), never a float reduction split
//! across threads, so results do not depend on rayon's scheduling.

use rayon::prelude::*;

use super::conv2d::Conv2dGeom;
use crate::error::{check_len, Result};

/// Copies the receptive fields of `x` into `col` (`[K][N]`). `col.len()` must be `K * N`.
pub fn im2col(g: &Conv2dGeom, x: &[f32], col: &mut [f32]) -> Result<()> {
    check_len("im2col.x", g.x_len(), x.len())?;
    check_len("im2col.col", g.col_len(), col.len())?;
    let (h, w, k, s, p) = (g.h, g.w, g.k, g.stride, g.pad);
    let (oh, ow) = (g.oh(), g.ow());
    let plane_out = oh * ow;
    let plane_in = h * w;
    if plane_out == 0 {
        return Ok(());
    }
    // One task per (row r = (c, ky, kx), batch b): writes col[r][b*OH*OW .. (b+1)*OH*OW].
    col.par_chunks_mut(plane_out)
        .enumerate()
        .for_each(|(idx, out)| {
            let r = idx / g.batch;
            let b = idx % g.batch;
            let c = r / (k * k);
            let ky = (r / k) % k;
            let kx = r % k;
            let src = &x[(c * g.batch + b) * plane_in..(c * g.batch + b + 1) * plane_in];
            // Valid ox range: 0 <= ox*s + kx - p < w.
            let ox_lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
            let ox_hi = if w + p > kx {
                ((w + p - kx - 1) / s + 1).min(ow)
            } else {
                0
            };
            for oy in 0..oh {
                let dst = &mut out[oy * ow..(oy + 1) * ow];
                let iy = (oy * s + ky) as isize - p as isize;
                if iy < 0 || iy >= h as isize || ox_lo >= ox_hi {
                    dst.iter_mut().for_each(|v| *v = 0.0);
                    continue;
                }
                let row = &src[iy as usize * w..(iy as usize + 1) * w];
                dst[..ox_lo].iter_mut().for_each(|v| *v = 0.0);
                dst[ox_hi..].iter_mut().for_each(|v| *v = 0.0);
                let ix0 = ox_lo * s + kx - p;
                if s == 1 {
                    dst[ox_lo..ox_hi].copy_from_slice(&row[ix0..ix0 + (ox_hi - ox_lo)]);
                } else {
                    for (j, d) in dst[ox_lo..ox_hi].iter_mut().enumerate() {
                        *d = row[ix0 + j * s];
                    }
                }
            }
        });
    Ok(())
}

/// Scatters `col` (`[K][N]`) back onto the input grid and ADDS it to `dx` (the adjoint of
/// [`im2col`]). Parallel over input planes `(c, b)`, each owned by one task.
pub fn col2im_acc(g: &Conv2dGeom, col: &[f32], dx: &mut [f32]) -> Result<()> {
    check_len("col2im.dx", g.x_len(), dx.len())?;
    check_len("col2im.col", g.col_len(), col.len())?;
    let (h, w, k, s, p) = (g.h, g.w, g.k, g.stride, g.pad);
    let (oh, ow) = (g.oh(), g.ow());
    let plane_out = oh * ow;
    let n = g.batch * plane_out;
    let plane_in = h * w;
    if plane_in == 0 {
        return Ok(());
    }
    dx.par_chunks_mut(plane_in)
        .enumerate()
        .for_each(|(idx, plane)| {
            let c = idx / g.batch;
            let b = idx % g.batch;
            for ky in 0..k {
                for kx in 0..k {
                    let r = (c * k + ky) * k + kx;
                    let src = &col[r * n + b * plane_out..r * n + (b + 1) * plane_out];
                    let ox_lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
                    let ox_hi = if w + p > kx {
                        ((w + p - kx - 1) / s + 1).min(ow)
                    } else {
                        0
                    };
                    if ox_lo >= ox_hi {
                        continue;
                    }
                    for oy in 0..oh {
                        let iy = (oy * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        let row = &mut plane[iy as usize * w..(iy as usize + 1) * w];
                        let srow = &src[oy * ow..(oy + 1) * ow];
                        let ix0 = ox_lo * s + kx - p;
                        if s == 1 {
                            for (d, v) in row[ix0..ix0 + (ox_hi - ox_lo)]
                                .iter_mut()
                                .zip(&srow[ox_lo..ox_hi])
                            {
                                *d += v;
                            }
                        } else {
                            for (j, v) in srow[ox_lo..ox_hi].iter().enumerate() {
                                row[ix0 + j * s] += v;
                            }
                        }
                    }
                }
            }
        });
    Ok(())
}
