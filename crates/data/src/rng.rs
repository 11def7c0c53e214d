//! Seeded randomness for the pipeline: every stream is a pure function of (seed, purpose, a, b).
//!
//! Keying ChaCha8 directly by these words (rather than advancing one shared generator) is what
//! makes the loader resumable for free: the permutation of epoch e and the augmentation of the
//! batch starting at position i depend on nothing that happened before.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a random stream is for; distinct purposes never share a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Purpose {
    Shuffle = 1,
    Augment = 2,
    Mixup = 3,
    Validation = 4,
    LabelNoise = 5,
    Subset = 6,
}

/// A ChaCha8 generator keyed by (seed, purpose, a, b).
pub(crate) fn keyed_rng(seed: u64, purpose: Purpose, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    key[16..24].copy_from_slice(&a.to_le_bytes());
    key[24..32].copy_from_slice(&b.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Fisher-Yates shuffle of `items` in place.
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

/// The permutation of `0..n` used in `epoch`: a pure function of (seed, epoch).
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    shuffle(&mut perm, &mut keyed_rng(seed, Purpose::Shuffle, epoch, 0));
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_pure_function_of_seed_and_epoch() {
        let a = epoch_permutation(1000, 7, 3);
        assert_eq!(a, epoch_permutation(1000, 7, 3));
        assert_ne!(a, epoch_permutation(1000, 7, 4));
        assert_ne!(a, epoch_permutation(1000, 8, 3));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    }
}
