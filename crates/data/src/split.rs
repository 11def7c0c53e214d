//! Splits and subsets as index lists: seeded validation split, first-n, seeded class-balanced-n.

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

/// A seeded, class-balanced draw of `n` of `indices`, returned ascending: `n / num_classes`
/// examples of every class, and one more of `n % num_classes` classes drawn at random, each class's
/// examples drawn at random from those `indices` holds. Unlike a prefix, it covers every class of a
/// data set stored class by class (Tiny ImageNet's official layout). Errors name a class that has
/// too few examples.
pub fn balanced_subset(
    labels: &[u32],
    num_classes: usize,
    indices: &[usize],
    n: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    if num_classes == 0 {
        return Err(DataError::InvalidArgument(
            "class-balanced subset of a data set with no classes".into(),
        ));
    }
    if n > indices.len() {
        return Err(DataError::InvalidArgument(format!(
            "subset of {n} examples requested from only {}",
            indices.len()
        )));
    }
    let mut classes: Vec<usize> = (0..num_classes).collect();
    shuffle(&mut classes, &mut keyed_rng(seed, Purpose::Subset, 0, 0));
    let mut quota = vec![n / num_classes; num_classes];
    for &c in &classes[..n % num_classes] {
        quota[c] += 1;
    }
    let mut order = indices.to_vec();
    shuffle(&mut order, &mut keyed_rng(seed, Purpose::Subset, 1, 0));
    let mut available = vec![0usize; num_classes];
    let mut out = Vec::with_capacity(n);
    for &i in &order {
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
        available[c] += 1;
        if available[c] <= quota[c] {
            out.push(i);
        }
    }
    if let Some(c) = (0..num_classes).find(|&c| available[c] < quota[c]) {
        return Err(DataError::InvalidArgument(format!(
            "class {c} has only {} examples, {} needed for a class-balanced subset of {n}",
            available[c], quota[c]
        )));
    }
    out.sort_unstable();
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

    fn counts(labels: &[u32], idx: &[usize], k: usize) -> Vec<usize> {
        let mut c = vec![0; k];
        idx.iter().for_each(|&i| c[labels[i] as usize] += 1);
        c
    }

    #[test]
    fn balanced_subset_covers_every_class_of_a_class_ordered_layout() {
        // 20 classes stored class by class, 50 examples each (Tiny ImageNet's layout in small):
        // a prefix of 100 would hold 2 classes.
        let labels: Vec<u32> = (0..1000).map(|i| (i / 50) as u32).collect();
        let all: Vec<usize> = (0..labels.len()).collect();
        assert_eq!(
            counts(&labels, &first_n(&all, 100).unwrap(), 20)
                .iter()
                .filter(|&&c| c > 0)
                .count(),
            2
        );
        let idx = balanced_subset(&labels, 20, &all, 100, 7).unwrap();
        assert_eq!(counts(&labels, &idx, 20), vec![5; 20]);
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "ascending");
        // Not the first examples of each class: a random draw within the class.
        assert!(idx.iter().any(|&i| i % 50 >= 5));
        // Seeded: the same seed draws the same subset, another seed another one.
        assert_eq!(balanced_subset(&labels, 20, &all, 100, 7).unwrap(), idx);
        assert_ne!(balanced_subset(&labels, 20, &all, 100, 8).unwrap(), idx);
        // A remainder goes to distinct classes: 103 = 5 × 20 + 3.
        let idx = balanced_subset(&labels, 20, &all, 103, 7).unwrap();
        let c = counts(&labels, &idx, 20);
        assert_eq!(
            (
                c.iter().sum::<usize>(),
                c.iter().filter(|&&x| x == 6).count()
            ),
            (103, 3)
        );
        assert!(c.iter().all(|&x| x == 5 || x == 6));
        // Only from the given indices.
        let odd: Vec<usize> = all.iter().copied().filter(|i| i % 2 == 1).collect();
        let idx = balanced_subset(&labels, 20, &odd, 200, 1).unwrap();
        assert!(idx.iter().all(|i| i % 2 == 1));
        assert_eq!(counts(&labels, &idx, 20), vec![10; 20]);
    }

    #[test]
    fn balanced_subset_names_a_class_without_enough_examples() {
        let labels: Vec<u32> = vec![0, 1, 2, 0, 1, 2, 0, 1, 0, 1];
        let all: Vec<usize> = (0..labels.len()).collect();
        let err = balanced_subset(&labels, 3, &all, 9, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("class 2 has only 2 examples, 3 needed"),
            "{err}"
        );
        assert!(balanced_subset(&labels, 3, &all, 11, 0).is_err());
        assert!(balanced_subset(&[0, 5], 3, &[0, 1], 2, 0).is_err());
    }

    #[test]
    fn first_n_checks_bounds() {
        assert_eq!(first_n(&[5, 6, 7], 2).unwrap(), vec![5, 6]);
        assert!(first_n(&[5, 6, 7], 4).is_err());
    }
}
