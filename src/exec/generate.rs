//! Generated inputs: arrays defined by a formula instead of a file (`ones`, `zeros`,
//! `full`, `arange`, `random`, `normal`). Element `k` (the row-major index in the
//! whole array) is a pure function of `k` and the seed, so every block computes its
//! own values and the array is the same whatever the chunking and the workers.
//!
//! `random` is uniform on [0, 1): the top 53 bits of SplitMix64 of `seed` mixed with
//! `k`. `normal` is a standard normal by the Box-Muller transform of two such
//! uniforms (of indices 2k and 2k + 1). These are drover's own streams, not numpy's.

use std::ops::Range;

use crate::config::workload::{GenKind, Generate};

/// SplitMix64's output function (Steele, Lea and Flood's constants).
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform on [0, 1) for stream position `k` of `seed`.
fn uniform(seed: u64, k: u64) -> f64 {
    let x = splitmix64(splitmix64(seed) ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The value of element `k`.
pub fn value(g: &Generate, k: u64) -> f64 {
    match g.kind {
        GenKind::Ones => 1.0,
        GenKind::Zeros => 0.0,
        GenKind::Full => g.value,
        GenKind::Arange => k as f64,
        GenKind::Random => uniform(g.seed, k),
        GenKind::Normal => {
            let u1 = 1.0 - uniform(g.seed, 2 * k); // in (0, 1]: ln is finite
            let u2 = uniform(g.seed, 2 * k + 1);
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }
}

/// Fill `out` with the values of `region` (row-major).
pub fn fill(g: &Generate, region: &[Range<usize>], out: &mut [f64]) {
    let rank = g.shape.len();
    let strides: Vec<u64> = (0..rank).map(|d| g.shape[d + 1..].iter().product::<usize>() as u64).collect();
    let mut idx: Vec<usize> = region.iter().map(|r| r.start).collect();
    if region.iter().any(|r| r.is_empty()) {
        return;
    }
    let inner = region.last().map_or(1, |r| r.len());
    for row in out.chunks_mut(inner.max(1)) {
        let base: u64 = idx.iter().zip(&strides).map(|(&i, &s)| i as u64 * s).sum();
        for (j, v) in row.iter_mut().enumerate() {
            *v = value(g, base + j as u64);
        }
        // Next row: step the index over all but the last dimension.
        for d in (0..rank.saturating_sub(1)).rev() {
            idx[d] += 1;
            if idx[d] < region[d].end {
                break;
            }
            idx[d] = region[d].start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(kind: GenKind, shape: &[usize]) -> Generate {
        Generate {
            kind,
            shape: shape.to_vec(),
            value: 2.5,
            seed: 7,
        }
    }

    #[test]
    fn a_region_holds_the_elements_of_its_indices() {
        let g = make(GenKind::Arange, &[4, 5, 6]);
        let region = [1..3, 2..5, 0..6];
        let mut out = vec![0.0; 2 * 3 * 6];
        fill(&g, &region, &mut out);
        let mut k = 0;
        for i in 1..3 {
            for j in 2..5 {
                for l in 0..6 {
                    assert_eq!(out[k], (i * 30 + j * 6 + l) as f64);
                    k += 1;
                }
            }
        }
    }

    #[test]
    fn random_values_do_not_depend_on_the_region() {
        for kind in [GenKind::Random, GenKind::Normal] {
            let g = make(kind, &[10, 10]);
            let mut whole = vec![0.0; 100];
            fill(&g, &[0..10, 0..10], &mut whole);
            let mut part = vec![0.0; 12];
            fill(&g, &[3..7, 4..7], &mut part);
            for (n, (i, j)) in (3..7).flat_map(|i| (4..7).map(move |j| (i, j))).enumerate() {
                assert_eq!(part[n], whole[i * 10 + j]);
            }
        }
    }

    #[test]
    fn moments_are_plausible() {
        let n = 200_000u64;
        let (mut s, mut s2, mut lo, mut hi) = (0.0, 0.0, f64::MAX, f64::MIN);
        let g = make(GenKind::Random, &[n as usize]);
        for k in 0..n {
            let v = value(&g, k);
            (s, lo, hi) = (s + v, lo.min(v), hi.max(v));
        }
        assert!((s / n as f64 - 0.5).abs() < 0.005 && lo >= 0.0 && hi < 1.0);
        let g = make(GenKind::Normal, &[n as usize]);
        s = 0.0;
        for k in 0..n {
            let v = value(&g, k);
            s += v;
            s2 += v * v;
        }
        let m = s / n as f64;
        assert!(m.abs() < 0.01 && (s2 / n as f64 - m * m - 1.0).abs() < 0.02);
        let other = Generate {
            seed: 8,
            ..make(GenKind::Random, &[1])
        };
        assert_ne!(value(&other, 0), value(&make(GenKind::Random, &[1]), 0), "seeds differ");
    }
}
