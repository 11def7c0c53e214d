//! Pooling with correct first- and second-order gradients.
//!
//! Candle 0.11.1's `Tensor::max_pool2d` backward scales the gradient by 1/k² and refuses
//! kernel ≠ stride (SCIENCE.md §7). On CPU, max-pooling runs on the fused ops of `max_pool.rs`
//! (PyTorch's semantics: the gradient goes to the first maximum of each window). Elsewhere, and
//! for average pooling, N×C×H×W is reshaped into N×C×H/k×k×W/k×k and reduced over the two
//! window axes. For `max`, that gives the gradient of `max` itself (a 0/1 mask), which is exact,
//! but ties inside a window send the full gradient to every tied entry. With real-valued
//! activations ties have probability zero, except all-zero windows after a ReLU, whose entries
//! then get gradient only where ReLU passes it: the same result as PyTorch's.

use candle_core::{Result, Tensor};

/// Splits N×C×H×W into non-overlapping k×k windows, dropping trailing rows/columns that do not
/// fill a window (PyTorch's and Keras' 'valid' floor), as N×C×H/k×k×W/k×k.
fn windows(x: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if k == 0 || h < k || w < k {
        candle_core::bail!("pool: window {k}×{k} does not fit input {:?}", x.dims());
    }
    let (ho, wo) = (h / k, w / k);
    let x = if ho * k != h {
        x.narrow(2, 0, ho * k)?
    } else {
        x.clone()
    };
    let x = if wo * k != w {
        x.narrow(3, 0, wo * k)?
    } else {
        x
    };
    x.contiguous()?.reshape((n, c, ho, k, wo, k))
}

/// k×k max-pool with stride k (`torch.nn.MaxPool2d(k)`), differentiable to second order. On
/// CPU (f32, f64) the fused ops of `max_pool.rs` (gradient to the first maximum of a window, as
/// PyTorch); elsewhere `max` over the window axes (gradient to every tied maximum).
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if super::max_pool::fused(x) {
        return super::max_pool::max_pool2d(x, k);
    }
    max_pool2d_windows(x, k)
}

/// [`max_pool2d`] by reshape and `max`, on any device.
pub(super) fn max_pool2d_windows(x: &Tensor, k: usize) -> Result<Tensor> {
    windows(x, k)?.max(5)?.max(3)
}

/// k×k average pool with stride k (`torch.nn.AvgPool2d(k)`), differentiable to second order.
pub fn avg_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    windows(x, k)?.mean(5)?.mean(3)
}

/// Global average pool: N×C×H×W → N×C (one reduction over the contiguous H·W axis).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h * w))?.mean(2)
}

/// `x[:, :, ::2, ::2]` (the subsampling of ResNet option-A shortcuts): N×C×⌈H/2⌉×⌈W/2⌉.
pub fn subsample2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    // Odd sizes: pad one zero row/column so the strided slice keeps ⌈H/2⌉ entries.
    let x = x.pad_with_zeros(2, 0, h % 2)?.pad_with_zeros(3, 0, w % 2)?;
    let (n, c, h, w) = x.dims4()?;
    x.contiguous()?
        .reshape((n, c, h / 2, 2, w / 2, 2))?
        .narrow(5, 0, 1)?
        .narrow(3, 0, 1)?
        .reshape((n, c, h / 2, w / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn input() -> Tensor {
        // Distinct values so that no window has a tie (finite differences stay on one side).
        let v: Vec<f64> = (0..2 * 3 * 5 * 5)
            .map(|i| ((i * 37 % 101) as f64) / 17.0 - 2.0)
            .collect();
        Tensor::from_vec(v, (2, 3, 5, 5), &Device::Cpu).unwrap()
    }

    fn fd_check(pool: fn(&Tensor, usize) -> Result<Tensor>) {
        let x = Var::from_tensor(&input()).unwrap();
        // A loss with non-uniform weights, so a wrongly scaled gradient cannot pass.
        let loss = |t: &Tensor| -> Result<Tensor> {
            let y = pool(t, 2)?;
            let w = Tensor::arange(0.0, y.elem_count() as f64, &Device::Cpu)?.reshape(y.shape())?;
            (y.sqr()? * (w + 1.0)?)?.sum_all()
        };
        let grad = loss(x.as_tensor()).unwrap().backward().unwrap();
        let g = grad
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = input().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let eps = 1e-6;
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, (2, 3, 5, 5), &Device::Cpu).unwrap();
                loss(&t).unwrap().to_scalar::<f64>().unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "coord {i}: autodiff {} vs fd {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn max_pool_gradient_matches_finite_differences() {
        fd_check(max_pool2d);
    }

    #[test]
    fn avg_pool_gradient_matches_finite_differences() {
        fd_check(avg_pool2d);
    }

    #[test]
    fn max_pool_values_and_floor() {
        let y = max_pool2d(&input(), 2).unwrap();
        assert_eq!(y.dims(), &[2, 3, 2, 2]);
        let reference = input()
            .narrow(2, 0, 4)
            .unwrap()
            .narrow(3, 0, 4)
            .unwrap()
            .max_pool2d(2)
            .unwrap();
        let d = (y - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(d, 0.0);
    }

    /// Documents the Candle bug this module works around: its max-pool gradient is 1/k² of
    /// the true one. If Candle fixes it, this test fails and the note in SCIENCE.md §7 can go.
    #[test]
    fn candle_max_pool_gradient_is_scaled_by_one_over_k_squared() {
        let x =
            Var::from_tensor(&input().narrow(2, 0, 4).unwrap().narrow(3, 0, 4).unwrap()).unwrap();
        let ours = max_pool2d(x.as_tensor(), 2)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let candle = x
            .as_tensor()
            .max_pool2d(2)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let ours = ours
            .get(&x)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let candle = candle
            .get(&x)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(
            ours,
            2.0 * 3.0 * 2.0 * 2.0,
            "one unit of gradient per window"
        );
        assert!(
            (candle - ours / 4.0).abs() < 1e-12,
            "candle {candle} vs ours/4 {}",
            ours / 4.0
        );
    }

    #[test]
    fn subsample_takes_every_other_entry() {
        let x = Tensor::arange(0.0f64, 2.0 * 5.0 * 5.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 5, 5))
            .unwrap();
        let y = subsample2(&x).unwrap();
        assert_eq!(y.dims(), &[1, 2, 3, 3]);
        let v = y.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(
            &v[..9],
            &[0.0, 2.0, 4.0, 10.0, 12.0, 14.0, 20.0, 22.0, 24.0]
        );
    }
}
