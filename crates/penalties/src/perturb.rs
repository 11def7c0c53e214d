//! Runs a computation with the parameters moved along a direction and restores them bit for bit
//! afterwards, also when the computation fails (TESTING.md §8).

use candle_core::{Result, Tensor, Var};

/// Sets θ ← θ + scale·dir, runs `f`, then writes the saved θ back (a deep copy taken first, so
/// the restore is exact rather than θ + εd − εd).
pub fn with_perturbed<T>(
    params: &[Var],
    dir: &[Tensor],
    scale: f64,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let saved = params
        .iter()
        .map(|p| Ok(p.as_tensor().copy()?.detach()))
        .collect::<Result<Vec<_>>>()?;
    let result = (|| {
        for ((p, s), d) in params.iter().zip(&saved).zip(dir) {
            p.set(&s.add(&d.affine(scale, 0.0)?)?)?;
        }
        f()
    })();
    let restored = params.iter().zip(&saved).try_for_each(|(p, s)| p.set(s));
    let out = result?;
    restored?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn bits(v: &Var) -> Vec<u32> {
        v.as_tensor()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    #[test]
    fn restores_bit_for_bit_on_success_and_on_error() {
        let p = Var::new(&[0.1f32, 1e-3, -7.3], &Device::Cpu).unwrap();
        let before = bits(&p);
        let d = Tensor::new(&[0.3f32, -0.9, 1.0 / 3.0], &Device::Cpu).unwrap();
        let seen = with_perturbed(
            std::slice::from_ref(&p),
            std::slice::from_ref(&d),
            1e-2,
            || p.as_tensor().to_vec1::<f32>(),
        )
        .unwrap();
        assert!((seen[0] - (0.1 + 0.003)).abs() < 1e-6);
        assert_eq!(bits(&p), before);
        let err = with_perturbed(
            std::slice::from_ref(&p),
            std::slice::from_ref(&d),
            0.5,
            || Err::<(), _>(candle_core::Error::Msg("boom".into())),
        );
        assert!(err.is_err());
        assert_eq!(bits(&p), before);
    }
}
