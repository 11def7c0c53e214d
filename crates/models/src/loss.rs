//! Mean cross-entropy and accuracy on logits, differentiable to second order.
//!
//! The loss is −(1/N) Σₙ ⟨onehot(yₙ), log_softmax(zₙ)⟩ with `candle_nn::ops::log_softmax`
//! (max-shift, exp, sum, log: every op has a backward that records a graph). Candle's
//! `softmax_last_dim` drops gradients (SCIENCE.md §7); the one-hot product avoids `gather`,
//! whose backward is a scatter.

use candle_core::{DType, Result, Tensor, D};

/// Mean cross-entropy of `logits` (N × K, float) against integer `labels` (N, u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let onehot = one_hot(logits, labels)?;
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let n = logits.dim(0)? as f64;
    (log_p * onehot)?.sum_all()? * (-1.0 / n)
}

/// The cross-entropy of each row of `logits` (N × K) against `labels` (N, u32): an N-vector
/// whose mean is [`cross_entropy`], and whose sum, differentiated, gives each row the gradient
/// of its own example alone (per-example gradients).
pub fn cross_entropy_per_example(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let onehot = one_hot(logits, labels)?;
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (log_p * onehot)?.sum(1)?.neg()
}

/// Fraction of rows whose largest logit is the label (the first maximum on ties).
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    check(logits, labels)?;
    let correct = logits
        .argmax(D::Minus1)?
        .eq(&labels.to_dtype(DType::U32)?)?
        .to_dtype(DType::F64)?;
    correct.mean_all()?.to_scalar::<f64>()
}

/// Number of rows whose largest logit is the label.
pub fn correct_count(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    check(logits, labels)?;
    let correct = logits
        .argmax(D::Minus1)?
        .eq(&labels.to_dtype(DType::U32)?)?
        .to_dtype(DType::U32)?;
    Ok(correct.sum_all()?.to_scalar::<u32>()? as usize)
}

fn check(logits: &Tensor, labels: &Tensor) -> Result<()> {
    let (n, k) = logits.dims2()?;
    if labels.dims() != [n] {
        candle_core::bail!(
            "cross_entropy: labels have shape {:?}, expected [{n}] for logits {:?}",
            labels.dims(),
            logits.dims()
        );
    }
    if n == 0 {
        candle_core::bail!("cross_entropy: empty batch (logits {:?})", logits.dims());
    }
    let max = labels.to_dtype(DType::U32)?.max(0)?.to_scalar::<u32>()? as usize;
    if max >= k {
        candle_core::bail!("cross_entropy: label {max} out of range for {k} classes");
    }
    Ok(())
}

/// N × K one-hot matrix of `labels` in the dtype of `logits`, built on the logits' device.
fn one_hot(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    check(logits, labels)?;
    let (n, k) = logits.dims2()?;
    let classes = Tensor::arange(0u32, k as u32, logits.device())?.reshape((1, k))?;
    let labels = labels
        .to_dtype(DType::U32)?
        .to_device(logits.device())?
        .reshape((n, 1))?;
    labels.broadcast_eq(&classes)?.to_dtype(logits.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn data() -> (Tensor, Tensor) {
        let z = Tensor::new(
            &[
                [1.0f64, -2.0, 0.5],
                [0.3, 0.2, -0.1],
                [3.0, 1.0, 2.0],
                [-1.0, 0.0, 4.0],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let y = Tensor::new(&[0u32, 2, 1, 2], &Device::Cpu).unwrap();
        (z, y)
    }

    #[test]
    fn value_matches_the_closed_form() {
        let (z, y) = data();
        let rows = z.to_vec2::<f64>().unwrap();
        let labels = [0, 2, 1, 2];
        let expected: f64 = rows
            .iter()
            .zip(labels)
            .map(|(r, l)| r.iter().map(|v| v.exp()).sum::<f64>().ln() - r[l])
            .sum::<f64>()
            / 4.0;
        let got = cross_entropy(&z, &y).unwrap().to_scalar::<f64>().unwrap();
        assert!((got - expected).abs() < 1e-14, "{got} vs {expected}");
        assert_eq!(accuracy(&z, &y).unwrap(), 0.5);
        assert_eq!(correct_count(&z, &y).unwrap(), 2);
    }

    #[test]
    fn gradient_is_softmax_minus_onehot_over_n() {
        let (z, y) = data();
        let z = Var::from_tensor(&z).unwrap();
        let g = cross_entropy(z.as_tensor(), &y)
            .unwrap()
            .backward()
            .unwrap();
        let g = g.get(&z).unwrap().to_vec2::<f64>().unwrap();
        let rows = z.as_tensor().to_vec2::<f64>().unwrap();
        for (i, (r, l)) in rows.iter().zip([0, 2, 1, 2]).enumerate() {
            let s: f64 = r.iter().map(|v| v.exp()).sum();
            for j in 0..3 {
                let expected = (r[j].exp() / s - if j == l { 1.0 } else { 0.0 }) / 4.0;
                assert!((g[i][j] - expected).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn bad_labels_are_rejected_with_their_value() {
        let (z, _) = data();
        let err =
            cross_entropy(&z, &Tensor::new(&[0u32, 1, 3, 0], &Device::Cpu).unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("label 3 out of range for 3 classes"),
            "{err}"
        );
        assert!(cross_entropy(&z, &Tensor::new(&[0u32, 1], &Device::Cpu).unwrap()).is_err());
    }
}
