//! CPU backend: the reference implementation of the heavy ops. It calls the layer functions of
//! `layers::{conv2d, linear}` directly; those are built on [`crate::gemm`] and
//! `layers::im2col`, so the dependency runs one way: backend → layers → primitives.

use super::Backend;
use crate::error::Result;
use crate::layers::conv2d::{self, Conv2dGeom, Conv2dGrads};
use crate::layers::linear::{self, LinearGeom, LinearGrads};

/// The CPU backend (im2col + `gemm` + rayon). Always available.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn conv2d_forward(
        &self,
        g: &Conv2dGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        col: &mut [f32],
    ) -> Result<()> {
        conv2d::conv2d_forward(g, x, w, bias, y, col)
    }

    fn conv2d_backward(
        &self,
        g: &Conv2dGeom,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        grads: Conv2dGrads<'_>,
        col: &mut [f32],
    ) -> Result<()> {
        conv2d::conv2d_backward(g, x, w, dy, grads, col)
    }

    fn linear_forward(
        &self,
        g: &LinearGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<()> {
        linear::linear_forward(g, x, w, bias, y)
    }

    fn linear_backward(
        &self,
        g: &LinearGeom,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        grads: LinearGrads<'_>,
    ) -> Result<()> {
        linear::linear_backward(g, x, w, dy, grads)
    }
}
