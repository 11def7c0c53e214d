//! Fully connected networks with tanh or ReLU hidden layers (the edge-of-stability paper's
//! `fc-tanh`/`fc-relu`, two hidden layers of 200 there).
//!
//! Reference: locuslab/edge-of-stability `src/archs.py`, `fully_connected_net`:
//! `nn.Sequential(Flatten, Linear, act, Linear, act, ..., Linear)`, hence the keys
//! `1.weight`, `1.bias`, `3.weight`, ... (odd indices; 0 is the Flatten). PyTorch's default
//! `nn.Linear` initialization, as that code does not override it.

use candle_core::{Result, Tensor, Var};

use crate::error::ModelError;
use crate::layers::Linear;
use crate::store::ParamStore;
use crate::{Mode, Model, Param, Tape};

/// The hidden nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Tanh,
    Relu,
}

pub struct FcNet {
    layers: Vec<Linear>,
    activation: Activation,
    params: Vec<Param>,
}

impl FcNet {
    /// Hidden layers of `widths`, input C·H·W features, `classes` outputs.
    pub fn new(
        mut store: ParamStore,
        widths: &[usize],
        activation: Activation,
        (c, h, w): (usize, usize, usize),
        classes: usize,
    ) -> std::result::Result<Self, ModelError> {
        if widths.contains(&0) {
            return Err(ModelError::InvalidSpec {
                arch: "fc",
                reason: format!("hidden widths must be positive, got {widths:?}"),
            });
        }
        let mut dims = vec![c * h * w];
        dims.extend_from_slice(widths);
        dims.push(classes);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| Linear::torch_default(&mut store, &(2 * i + 1).to_string(), (d[0], d[1])))
            .collect::<Result<Vec<_>>>()?;
        let (params, _) = store.finish();
        Ok(Self {
            layers,
            activation,
            params,
        })
    }
}

impl FcNet {
    /// The forward pass, recording its layers in `tape` when there is one.
    fn run(&self, x: &Tensor, tape: Option<&Tape>) -> Result<Tensor> {
        let mut x = if x.rank() > 2 {
            x.flatten_from(1)?
        } else {
            x.clone()
        };
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward_with(&x, tape)?;
            if i < last {
                x = match self.activation {
                    Activation::Tanh => x.tanh()?,
                    Activation::Relu => crate::ops::relu(&x)?,
                };
            }
        }
        Ok(x)
    }
}

impl Model for FcNet {
    /// Accepts N × D or N × C × H × W (flattened).
    fn forward(&self, x: &Tensor, _mode: Mode) -> Result<Tensor> {
        self.run(x, None)
    }

    /// No BatchNorm: every layer is a Linear.
    fn forward_taped(&self, x: &Tensor, tape: &Tape) -> Result<Option<Tensor>> {
        self.run(x, Some(tape)).map(Some)
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    fn buffers(&self) -> Vec<(String, Var)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use crate::gradcheck::{check_deterministic, names, param_count, setup};
    use crate::ModelSpec;

    #[test]
    fn parameter_count_and_names_match_the_reference() {
        // Two hidden layers of 200 on CIFAR-10: 3072·200+200 + 200·200+200 + 200·10+10
        // = 656,810 (the edge-of-stability paper's fc nets; recounted by reference/models.py).
        let s = setup(
            &ModelSpec::FcTanh {
                widths: vec![200, 200],
            },
            (3, 32, 32),
            10,
            1,
            0,
        );
        assert_eq!(param_count(s.model.as_ref()), 656_810);
        assert_eq!(
            names(s.model.as_ref()),
            ["1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias"]
        );
    }

    #[test]
    fn tanh_gradient_and_hvp_match_finite_differences() {
        let s = setup(
            &ModelSpec::FcTanh { widths: vec![7, 5] },
            (2, 3, 3),
            4,
            5,
            4,
        );
        s.check_gradient(40, 5);
        s.check_hvp(6);
    }

    #[test]
    fn relu_gradient_and_hvp_match_finite_differences() {
        let s = setup(
            &ModelSpec::FcRelu { widths: vec![9, 6] },
            (1, 4, 4),
            3,
            4,
            7,
        );
        s.check_gradient(40, 8);
        s.check_hvp(9);
    }

    #[test]
    fn construction_is_deterministic() {
        check_deterministic(&ModelSpec::FcRelu { widths: vec![20] }, (1, 5, 5), 3);
    }
}
