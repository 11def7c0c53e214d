//! Splits and subsets as index lists: seeded validation split, first-n, class-balanced-n.

use crate::error::{DataError, Result};
use crate::rng::{keyed_rng, shuffle, Purpose};

/// Carves `n_val` examples out of `0..n` at random (seeded): returns `(train, val)`, each ascending.
pub fn validation_split(n: usize, n_val: usize, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if n_val > n {
        return Err(DataError::InvalidArgument(format!(
            "validation split of {n_val} examples from only {n}"
        )));
    }
    let mut perm: Vec<usize> = (0..n).collect();
    shuffle(&mut perm, &mut keyed_rng(seed, Purpose::Validation, 0, 0));
    let mut val = perm[..n_val].to_vec();
    let mut train = perm[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Ok((train, val))
}

/// The first `n` of `indices`.
pub fn first_n(indices: &[usize], n: usize) -> Result<Vec<usize>> {
    if n > indices.len() {
        return Err(DataError::InvalidArgument(format!(
            "first {n} examples requested from only {}",
            indices.len()
        )));
    }
    Ok(indices[..n].to_vec())
}

/// `n / num_classes` examples of every class: the first ones of each class in the order of
/// `indices`, returned in that order. `n` must be a multiple of `num_classes` and every class
/// must have enough examples.
pub fn class_balanced(
    labels: &[u32],
    num_classes: usize,
    indices: &[usize],
    n: usize,
) -> Result<Vec<usize>> {
    if num_classes == 0 || n % num_classes != 0 {
        return Err(DataError::InvalidArgument(format!(
            "class-balanced subset of {n} is not a multiple of {num_classes} classes"
        )));
    }
    let per = n / num_classes;
    let mut taken = vec![0usize; num_classes];
    let mut out = Vec::with_capacity(n);
    for &i in indices {
        let Some(&label) = labels.get(i) else {
            return Err(DataError::InvalidArgument(format!(
                "index {i} out of range for {} labels",
                labels.len()
            )));
        };
        let c = label as usize;
        if c >= num_classes {
            return Err(DataError::InvalidArgument(format!(
                "label {label} of example {i} is not < {num_classes}"
            )));
        }
        if taken[c] < per {
            taken[c] += 1;
            out.push(i);
        }
    }
    if let Some(c) = taken.iter().position(|&t| t < per) {
        return Err(DataError::InvalidArgument(format!(
            "class {c} has only {} examples, {per} needed for a balanced subset of {n}",
            taken[c]
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_split_is_seeded_disjoint_and_complete() {
        let (train, val) = validation_split(100, 20, 1).unwrap();
        assert_eq!((train.len(), val.len()), (80, 20));
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(validation_split(100, 20, 1).unwrap().1, val);
        assert_ne!(validation_split(100, 20, 2).unwrap().1, val);
        assert!(validation_split(10, 11, 0).is_err());
    }

    #[test]
    fn class_balanced_counts_and_order() {
        // Labels 0,1,2,0,1,2,... with class 2 rarer at the end.
        let labels: Vec<u32> = vec![0, 1, 2, 0, 1, 2, 0, 1, 0, 1];
        let all: Vec<usize> = (0..labels.len()).collect();
        let idx = class_balanced(&labels, 3, &all, 6).unwrap();
        assert_eq!(idx, vec![0, 1, 2, 3, 4, 5]);
        let mut counts = [0; 3];
        for &i in &idx {
            counts[labels[i] as usize] += 1;
        }
        assert_eq!(counts, [2, 2, 2]);
        // Class 2 has only two examples.
        assert!(class_balanced(&labels, 3, &all, 9).is_err());
        assert!(class_balanced(&labels, 3, &all, 4).is_err());
        // Respects the order of `indices`.
        let rev: Vec<usize> = all.iter().rev().copied().collect();
        assert_eq!(class_balanced(&labels, 3, &rev, 3).unwrap(), vec![9, 8, 5]);
    }

    #[test]
    fn first_n_checks_bounds() {
        assert_eq!(first_n(&[5, 6, 7], 2).unwrap(), vec![5, 6]);
        assert!(first_n(&[5, 6, 7], 4).is_err());
    }
}
