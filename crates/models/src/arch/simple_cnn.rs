//! SimpleCNN of the ICLR 2019 break-even paper (SCIENCE.md §6): the group's Keras model,
//! here with PyTorch layout and names.
//!
//! conv3×3 32 'same' → ReLU → conv3×3 32 'valid' → ReLU → maxpool 2 → conv3×3 64 'same' →
//! ReLU → conv3×3 64 'valid' → ReLU → maxpool 2 → flatten → dense 128 → ReLU → dense K.
//! 361,898 parameters on 32×32×3 with 10 classes (flattened feature 64×6×6 = 2,304).
//!
//! There is no PyTorch reference; names follow the port in `reference/models.py`
//! (`conv1`..`conv4`, `fc1`, `fc2`). The flatten is PyTorch's C,H,W order (Keras flattens
//! H,W,C: a fixed permutation of `fc1`'s inputs, irrelevant when training from scratch).
//! Initialization: Keras defaults, Glorot-uniform kernels and zero biases.

use candle_core::{Result, Tensor, Var};

use crate::error::ModelError;
use crate::init::Init;
use crate::layers::{Conv2d, ConvShape, Linear};
use crate::store::ParamStore;
use crate::{ops, Mode, Model, Param, Tape};

pub struct SimpleCnn {
    convs: [Conv2d; 4],
    fc1: Linear,
    fc2: Linear,
    params: Vec<Param>,
    buffers: Vec<(String, Var)>,
}

impl SimpleCnn {
    /// Channel widths 32·m, 32·m, 64·m, 64·m and dense width 128·m (rounded, at least 1).
    pub fn new(
        mut store: ParamStore,
        width_mult: f64,
        (c, h, w): (usize, usize, usize),
        classes: usize,
    ) -> std::result::Result<Self, ModelError> {
        if !(width_mult > 0.0 && width_mult.is_finite()) {
            return Err(ModelError::InvalidSpec {
                arch: "simple_cnn",
                reason: format!("width_mult must be positive, got {width_mult}"),
            });
        }
        let scale = |n: f64| ((n * width_mult).round() as usize).max(1);
        let (c1, c2, hidden) = (scale(32.0), scale(64.0), scale(128.0));
        // 'same' keeps the size, 'valid' loses 2, the pool halves (floor).
        let side = |n: usize| {
            n.checked_sub(2)
                .map(|n| n / 2)
                .and_then(|n| n.checked_sub(2))
                .map(|n| n / 2)
                .filter(|&n| n > 0)
        };
        let (Some(ho), Some(wo)) = (side(h), side(w)) else {
            return Err(ModelError::InvalidInput {
                arch: "simple_cnn",
                input: (c, h, w),
                reason: "needs H, W ≥ 10".into(),
            });
        };
        let glorot = |s: &mut ParamStore, name: &str, shape: ConvShape| {
            Conv2d::new(s, name, shape, Init::GlorotUniform, Some(Init::Zeros))
        };
        let convs = [
            glorot(&mut store, "conv1", ConvShape::same(c, c1, 3))?,
            glorot(&mut store, "conv2", ConvShape::same(c1, c1, 3).padding(0))?,
            glorot(&mut store, "conv3", ConvShape::same(c1, c2, 3))?,
            glorot(&mut store, "conv4", ConvShape::same(c2, c2, 3).padding(0))?,
        ];
        let fc1 = Linear::new(
            &mut store,
            "fc1",
            (c2 * ho * wo, hidden),
            Init::GlorotUniform,
            Some(Init::Zeros),
        )?;
        let fc2 = Linear::new(
            &mut store,
            "fc2",
            (hidden, classes),
            Init::GlorotUniform,
            Some(Init::Zeros),
        )?;
        let (params, buffers) = store.finish();
        Ok(Self {
            convs,
            fc1,
            fc2,
            params,
            buffers,
        })
    }
}

impl SimpleCnn {
    /// The forward pass, recording its layers in `tape` when there is one.
    fn run(&self, x: &Tensor, tape: Option<&Tape>) -> Result<Tensor> {
        // ReLU after the pool: max-pool and ReLU commute (relu(max z) = max relu(z), exactly,
        // and the gradient reaches the same first maximum or is zero in both orders), and the
        // ReLU and its backward then run on a quarter of the elements.
        let c = &self.convs;
        // Convolution and ReLU as one op where no pool sits between them (`forward_relu_with`:
        // the pre-activation is not kept for the backward pass; the same numbers).
        let x = c[0].forward_relu_with(x, tape)?;
        let x = ops::relu(&ops::max_pool2d(&c[1].forward_with(&x, tape)?, 2)?)?;
        let x = c[2].forward_relu_with(&x, tape)?;
        let x = ops::relu(&ops::max_pool2d(&c[3].forward_with(&x, tape)?, 2)?)?;
        let x = ops::relu(&self.fc1.forward_with(&x.flatten_from(1)?, tape)?)?;
        self.fc2.forward_with(&x, tape)
    }
}

impl Model for SimpleCnn {
    fn forward(&self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        self.run(x, None)
    }

    /// No BatchNorm: every layer is a Conv2d or a Linear.
    fn forward_taped(&self, x: &Tensor, tape: &Tape) -> Result<Option<Tensor>> {
        self.run(x, Some(tape)).map(Some)
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    fn buffers(&self) -> Vec<(String, Var)> {
        self.buffers.clone()
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_deterministic, names, param_count, setup};
    use crate::ModelSpec;

    #[test]
    fn parameter_count_and_names_match_the_paper() {
        // 361,898: SCIENCE.md §6 (the paper's model on CIFAR-10), recounted by
        // reference/models.py.
        let s = setup(
            &ModelSpec::SimpleCnn { width_mult: 1.0 },
            (3, 32, 32),
            10,
            1,
            0,
        );
        assert_eq!(param_count(s.model.as_ref()), 361_898);
        let expected = ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2"]
            .iter()
            .flat_map(|l| [format!("{l}.weight"), format!("{l}.bias")]);
        assert_eq!(names(s.model.as_ref()), expected.collect::<Vec<_>>());
        assert!(s.model.buffers().is_empty());
    }

    #[test]
    fn gradient_and_hvp_match_finite_differences() {
        let s = setup(
            &ModelSpec::SimpleCnn { width_mult: 0.125 },
            (3, 12, 12),
            3,
            3,
            1,
        );
        s.check_gradient(30, 2);
        s.check_hvp(3);
    }

    #[test]
    fn pooling_before_the_relu_gives_the_same_logits_and_gradients() {
        // The paper's order, relu then pool, against ours, in f64: same bits.
        use crate::{cross_entropy, ops, Mode};
        use candle_core::Tensor;
        let s = setup(
            &ModelSpec::SimpleCnn { width_mult: 0.25 },
            (3, 16, 16),
            10,
            4,
            3,
        );
        let m = s.model.as_ref();
        let p: Vec<_> = m
            .params()
            .iter()
            .map(|p| p.var.as_tensor().clone())
            .collect();
        let conv = |x: &Tensor, i: usize| {
            ops::conv2d(
                x,
                &p[2 * i],
                Some(&p[2 * i + 1]),
                1,
                if i.is_multiple_of(2) { 1 } else { 0 },
            )
        };
        let paper = |x: &Tensor| -> candle_core::Result<Tensor> {
            let x = ops::relu(&conv(x, 0)?)?;
            let x = ops::max_pool2d(&ops::relu(&conv(&x, 1)?)?, 2)?;
            let x = ops::relu(&conv(&x, 2)?)?;
            let x = ops::max_pool2d(&ops::relu(&conv(&x, 3)?)?, 2)?;
            let x = ops::relu(
                &x.flatten_from(1)?
                    .matmul(&p[8].t()?)?
                    .broadcast_add(&p[9])?,
            )?;
            x.matmul(&p[10].t()?)?.broadcast_add(&p[11])
        };
        // Inputs with exact zeros and negative values, so that some pooled windows are all ≤ 0.
        let x = (s.x.clone() - 0.3).unwrap().relu().unwrap();
        let x = (x - 0.1).unwrap();
        let ours = m.forward(&x, Mode::Train).unwrap();
        let theirs = paper(&x).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(flat(&ours), flat(&theirs));
        let (g1, g2) = (
            cross_entropy(&ours, &s.y).unwrap().backward().unwrap(),
            cross_entropy(&theirs, &s.y).unwrap().backward().unwrap(),
        );
        for q in m.params() {
            assert_eq!(
                flat(g1.get(&q.var).unwrap()),
                flat(g2.get(&q.var).unwrap()),
                "{}",
                q.name
            );
        }
    }

    #[test]
    fn construction_is_deterministic() {
        check_deterministic(&ModelSpec::SimpleCnn { width_mult: 0.25 }, (3, 16, 16), 10);
    }
}
