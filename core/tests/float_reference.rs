//! The float path equals a naive dense f64 implementation of the spec on random small models.
mod common;
use common::*;
use empf_core::{Mode, Model};
use proptest::prelude::*;

/// Stated tolerance: `|core − reference| ≤ 1e-5 · max(1, ‖reference‖∞)` per logit.
const REL_TOL: f64 = 1e-5;

fn check(seed: u64) -> Result<(), TestCaseError> {
    let mut rng = Rng(seed);
    let dm = random_model(&mut rng, false);
    let bytes = dm.encode();
    let model = Model::decode(&bytes).expect("decode");
    let mut arena = vec![0u32; model.arena_words_for(Mode::Sequential)];
    for _ in 0..3 {
        let x = random_input(&mut rng, &dm);
        let mut out = vec![0.0f32; model.classes()];
        model
            .infer_float(&x, Mode::Sequential, &mut arena, &mut out)
            .unwrap();
        let r = reference(&dm, &x);
        let scale = r.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (k, (&o, &e)) in out.iter().zip(&r).enumerate() {
            prop_assert!(
                (o as f64 - e).abs() <= REL_TOL * scale,
                "seed {seed} logit {k}: core {o} vs reference {e} (scale {scale})\n{dm:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn float_path_matches_naive_reference(seed in any::<u64>()) {
        check(seed)?;
    }
}

/// The reference itself must be able to disagree: a flipped sign bit changes the output.
#[test]
fn reference_detects_a_flipped_weight() {
    let mut rng = Rng(7);
    let mut dm = random_model(&mut rng, false);
    let x = random_input(&mut rng, &dm);
    let before = reference(&dm, &x);
    for l in dm.layers.iter_mut() {
        if let Dense::Linear { w, .. } = l {
            w.iter_mut().for_each(|v| *v = -*v);
        }
    }
    let after = reference(&dm, &x);
    assert_ne!(before, after);
}
