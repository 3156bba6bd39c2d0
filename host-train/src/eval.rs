//! `host-train eval`'s engine: a test set through `empf-core` on several threads, and the check
//! that a model file and a checkpoint describe the same network before they are compared.
//!
//! The images are split into one contiguous range per thread; each thread owns one sequential
//! arena and its input/output buffers (allocated once) and the ranges are joined in order, so
//! the result is the single-threaded one whatever the thread count (tested). `empf-core` stays
//! single-threaded and allocation-free; the threads live here.

use empf_core::{Mode, Model};

#[cfg(test)]
use crate::data::Normalization;
use crate::data::{ChannelNorm, Dataset};
use crate::net::Net;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// `empf-core` refused an inference (cannot happen for a decoded model and a matching input;
    /// reported rather than unwrapped).
    #[error("empf-core inference of test image {index}: {error}")]
    Core {
        /// The image.
        index: usize,
        /// Core's error.
        error: empf_core::Error,
    },
    /// The test images do not have the model's input size.
    #[error("the model expects {expected} input values per image, the test images have {found}")]
    InputSize {
        /// Values the model reads.
        expected: usize,
        /// Values per test image.
        found: usize,
    },
    /// A worker thread could not be started.
    #[error("cannot start an evaluation thread: {0}")]
    Spawn(std::io::Error),
    /// A worker thread panicked (a bug; reported instead of propagated).
    #[error("an evaluation thread panicked")]
    WorkerPanicked,
    /// The checkpoint's network cannot be exported for the comparison.
    #[error("the checkpoint's network cannot be exported: {0}")]
    Export(#[from] crate::export::ExportError),
    /// Model and checkpoint differ (what differs first).
    #[error("{0}")]
    NetworkMismatch(String),
}

/// `empf-core`'s verdict on one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CorePrediction {
    /// Argmax (first maximum) of the float path's logits.
    pub float_class: usize,
    /// Top-1 minus top-2 float logit (0 with fewer than two classes).
    pub float_margin: f32,
    /// Argmax of the integer path's logits, when the model has one.
    pub fixed_class: Option<usize>,
}

fn argmax<T: PartialOrd>(v: &[T]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// Bytes of the sequential-mode arena (the only mode `eval` runs) of one thread.
pub fn arena_bytes_per_thread(model: &Model) -> usize {
    model.arena_words_for(Mode::Sequential).saturating_mul(4)
}

/// Runs the first `n` images of `test` (fewer if it has fewer) through `model`'s float path and,
/// if present, its integer path, sequential mode, on `threads` threads; results in image order.
pub fn eval_core(
    model: &Model,
    test: &Dataset,
    n: usize,
    norm: impl Into<ChannelNorm>,
    threads: usize,
) -> Result<Vec<CorePrediction>, EvalError> {
    let norm: ChannelNorm = norm.into();
    let plane = test.height() * test.width();
    let input_len = model.input_shape().numel();
    if test.image_len() != input_len {
        return Err(EvalError::InputSize {
            expected: input_len,
            found: test.image_len(),
        });
    }
    let n = n.min(test.len());
    let threads = threads.clamp(1, n.max(1));
    let chunk = n.div_ceil(threads).max(1);
    let ranges: Vec<(usize, usize)> = (0..n)
        .step_by(chunk)
        .map(|s| (s, (s + chunk).min(n)))
        .collect();
    let run = |(start, end): (usize, usize)| -> Result<Vec<CorePrediction>, EvalError> {
        let classes = model.classes();
        let mut arena = vec![0u32; model.arena_words_for(Mode::Sequential)];
        let mut out = vec![0.0f32; classes];
        let mut qout = vec![0i32; classes];
        let mut x = vec![0.0f32; input_len];
        let mut xq = vec![0i8; input_len];
        let mut preds = Vec::with_capacity(end - start);
        for index in start..end {
            let core = |error| EvalError::Core { index, error };
            norm.normalize_chw_into(test.image(index).unwrap_or(&[]), plane, &mut x);
            model
                .infer_float(&x, Mode::Sequential, &mut arena, &mut out)
                .map_err(core)?;
            let float_class = argmax(&out);
            let second = (0..classes)
                .filter(|&k| k != float_class)
                .map(|k| out[k])
                .reduce(f32::max);
            let fixed_class = match model.fixed_meta() {
                Some(_) => {
                    model.quantize_input(&x, &mut xq).map_err(core)?;
                    model
                        .infer_fixed(&xq, Mode::Sequential, &mut arena, &mut qout)
                        .map_err(core)?;
                    Some(argmax(&qout))
                }
                None => None,
            };
            preds.push(CorePrediction {
                float_class,
                float_margin: second.map_or(0.0, |s| out[float_class] - s),
                fixed_class,
            });
        }
        Ok(preds)
    };
    let parts: Vec<Result<Vec<CorePrediction>, EvalError>> = if ranges.len() <= 1 {
        ranges.into_iter().map(run).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|&r| {
                    std::thread::Builder::new()
                        .name("empf-eval".into())
                        .spawn_scoped(s, move || run(r))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h {
                    Ok(h) => h.join().unwrap_or(Err(EvalError::WorkerPanicked)),
                    Err(e) => Err(EvalError::Spawn(e)),
                })
                .collect()
        })
    };
    let mut all = Vec::with_capacity(n);
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}

/// Checks that `net` (rebuilt from a checkpoint) is the network `model` describes: same time
/// steps, input shape, classes, and the same layers with the same output shapes, as `empf-core`
/// sees them after export. Weights are not compared: a model of another checkpoint of the same
/// network is a legitimate comparison, whose differences `eval` counts.
pub fn check_same_network(model: &Model, net: &Net) -> Result<(), EvalError> {
    let bytes = crate::export::export_float(net)?;
    let host = Model::decode(&bytes).map_err(|e| {
        EvalError::NetworkMismatch(format!("the checkpoint's network does not decode: {e}"))
    })?;
    let differ = |what: &str, m: String, c: String| {
        Err(EvalError::NetworkMismatch(format!(
            "{what}: model {m}, checkpoint {c}"
        )))
    };
    let shape = |s: empf_core::Shape| format!("{}x{}x{}", s.c, s.h, s.w);
    if model.classes() != host.classes() {
        return differ(
            "classes",
            model.classes().to_string(),
            host.classes().to_string(),
        );
    }
    if model.input_shape() != host.input_shape() {
        return differ(
            "input shape",
            shape(model.input_shape()),
            shape(host.input_shape()),
        );
    }
    if model.time_steps() != host.time_steps() {
        return differ(
            "time steps T",
            model.time_steps().to_string(),
            host.time_steps().to_string(),
        );
    }
    if model.layer_count() != host.layer_count() {
        return differ(
            "layer count",
            model.layer_count().to_string(),
            host.layer_count().to_string(),
        );
    }
    let decode_err = |e| EvalError::NetworkMismatch(format!("layer table: {e}"));
    for (i, (a, b)) in model.layer_infos().zip(host.layer_infos()).enumerate() {
        let (a, b) = (a.map_err(decode_err)?, b.map_err(decode_err)?);
        if (a.kind, a.output) != (b.kind, b.output) {
            return differ(
                &format!("layer {i}"),
                format!("{} -> {}", a.kind, shape(a.output)),
                format!("{} -> {}", b.kind, shape(b.output)),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{BenchOptions, NetConfig};

    /// `n` varied 28×28 images.
    fn data(n: usize) -> Dataset {
        let images = (0..n * 784)
            .map(|i| ((i * 7919 + i / 784 * 13) % 251) as u8)
            .collect();
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        Dataset::new(images, labels, 28, 28).unwrap()
    }

    fn mcu_model() -> Vec<u8> {
        let mut net = Net::new(NetConfig::mcu(2, &BenchOptions::default()), 3).unwrap();
        // Freshly initialised, every neuron stays below threshold and every image gets the
        // same logits; larger BN gains make the network respond to its input.
        for n in 1..=3 {
            if let Some(p) = net.param_mut(&format!("bn{n}.weight")) {
                p.value.iter_mut().for_each(|v| *v = 4.0);
            }
        }
        crate::export::export_float(&net).unwrap()
    }

    #[test]
    fn any_thread_count_gives_the_single_threaded_result() {
        let bytes = mcu_model();
        let model = Model::decode(&bytes).unwrap();
        // 11 images: no thread count below divides them evenly, and 16 threads are more than
        // images (debug-build inference is slow, so the set stays small).
        let test = data(11);
        let norm = Normalization::FASHION_MNIST;
        let one = eval_core(&model, &test, 11, norm, 1).unwrap();
        assert_eq!(one.len(), 11);
        // The margins differ from image to image (else equality would say little).
        let distinct: std::collections::BTreeSet<u32> =
            one.iter().map(|p| p.float_margin.to_bits()).collect();
        assert!(distinct.len() > 5, "{one:?}");
        for threads in [2, 3, 16] {
            let many = eval_core(&model, &test, 11, norm, threads).unwrap();
            let bits = |v: &[CorePrediction]| -> Vec<(usize, u32)> {
                v.iter()
                    .map(|p| (p.float_class, p.float_margin.to_bits()))
                    .collect()
            };
            assert_eq!(bits(&many), bits(&one), "{threads} threads");
        }
        // A limit below the set's size, and an empty range.
        assert_eq!(eval_core(&model, &test, 5, norm, 3).unwrap(), one[..5]);
        assert!(eval_core(&model, &test, 0, norm, 3).unwrap().is_empty());
    }

    #[test]
    fn wrong_image_size_is_an_error() {
        let bytes = mcu_model();
        let model = Model::decode(&bytes).unwrap();
        let small = Dataset::new(vec![0; 2 * 400], vec![0, 1], 20, 20).unwrap();
        let err = eval_core(&model, &small, 2, Normalization::UNIT, 2).unwrap_err();
        assert!(
            matches!(
                err,
                EvalError::InputSize {
                    expected: 784,
                    found: 400
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn model_and_checkpoint_of_different_networks_are_told_apart() {
        let opts = BenchOptions::default();
        let net = Net::new(NetConfig::bench_sized(1, 28, 28, 10, 2, &opts), 1).unwrap();
        let same =
            crate::export::export_float(&Net::new(net.config().clone(), 9).unwrap()).unwrap();
        // Another seed, same network: accepted.
        check_same_network(&Model::decode(&same).unwrap(), &net).unwrap();
        for (config, needle) in [
            (
                NetConfig::bench_sized(1, 28, 28, 12, 2, &opts),
                "classes: model 12, checkpoint 10",
            ),
            (
                NetConfig::bench_sized(1, 28, 28, 8, 2, &opts),
                "classes: model 8, checkpoint 10",
            ),
            (
                NetConfig::bench_sized(1, 28, 28, 10, 4, &opts),
                "time steps T: model 4, checkpoint 2",
            ),
            (
                NetConfig::bench_sized(1, 20, 20, 10, 2, &opts),
                "input shape",
            ),
            (NetConfig::mcu(2, &opts), "layer"),
        ] {
            let other = crate::export::export_float(&Net::new(config, 1).unwrap()).unwrap();
            let err = check_same_network(&Model::decode(&other).unwrap(), &net).unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }
}
