//! Without `CANDLE_GRAD_DO_NOT_DETACH`, double backprop must be refused with a typed error (an
//! HVP would silently come out zero), while the finite-difference method still works. Its own
//! test binary, because candle-core reads the variable once per thread and the unit tests set it.

use breakeven_models::{Mode, Model, Param};
use breakeven_penalties::{GradMethod, Penalizer, PenaltyConfig, PenaltyError, PenaltyKind};
use candle_core::{Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

struct Linear(Vec<Param>);

impl Model for Linear {
    fn forward(&self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        x.matmul(&self.0[0].var.as_tensor().t()?)
    }
    fn params(&self) -> &[Param] {
        &self.0
    }
    fn buffers(&self) -> Vec<(String, Var)> {
        Vec::new()
    }
}

#[test]
fn double_backprop_is_refused_when_gradients_are_detached() {
    // Whatever the caller's environment says, this process must start with detaching on.
    // Edition 2021: a safe fn; nothing else runs in this single-test binary yet.
    std::env::remove_var("CANDLE_GRAD_DO_NOT_DETACH");
    let dev = Device::Cpu;
    let w = Var::new(&[[0.3f64, -0.2], [0.1, 0.5], [-0.4, 0.2]], &dev).unwrap();
    let model = Linear(vec![Param {
        name: "weight".into(),
        var: w,
    }]);
    let x = Tensor::new(&[[1.0f64, 2.0], [-1.0, 0.5], [0.3, 0.3]], &dev).unwrap();
    let y = Tensor::new(&[0u32, 2, 1], &dev).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);

    let db = Penalizer::new(PenaltyConfig::new(PenaltyKind::Gp, 0.1), 3).unwrap();
    let err = db.step(&model, &x, &y, 0, &mut rng).unwrap_err();
    assert!(
        matches!(err, PenaltyError::SecondOrderUnavailable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("CANDLE_GRAD_DO_NOT_DETACH"));

    let cfg = PenaltyConfig {
        method: GradMethod::FiniteDifference {
            rel_step: None,
            one_sided: false,
            checked: true,
        },
        ..PenaltyConfig::new(PenaltyKind::Gp, 0.1)
    };
    let out = Penalizer::new(cfg, 3)
        .unwrap()
        .step(&model, &x, &y, 0, &mut rng)
        .unwrap();
    assert!(out.applied && out.penalty.unwrap() > 0.0);
}
