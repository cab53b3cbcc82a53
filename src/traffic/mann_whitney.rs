//! The one-sided Mann-Whitney U test: is the first sample (the canary's latencies)
//! stochastically larger than the second (the stable slot's)? Normal approximation
//! with a continuity correction and the tie correction of the variance (latencies in
//! whole milliseconds tie a lot). No maintained Rust crate offers it without a large
//! dependency (statistics crates bring linear algebra or dataframes), and it is a
//! few lines: ranks by sorting, a sum, and the normal tail.

/// The p-value of H1 "x is larger than y" (1.0 when either sample is empty or every
/// value is the same).
pub fn greater_p(x: &[u32], y: &[u32]) -> f64 {
    let (n1, n2) = (x.len() as f64, y.len() as f64);
    if x.is_empty() || y.is_empty() {
        return 1.0;
    }
    // Ranks over both samples together, tied values taking their average rank.
    let mut all: Vec<(u32, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    all.sort_unstable_by_key(|&(v, _)| v);
    let n = all.len() as f64;
    let mut rank_sum_x = 0.0;
    let mut ties = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i) as f64;
        // Ranks i+1 ..= j, averaged.
        let rank = (i + 1 + j) as f64 / 2.0;
        rank_sum_x += rank * all[i..j].iter().filter(|e| e.1).count() as f64;
        ties += t * t * t - t;
        i = j;
    }
    let u = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 || !var.is_finite() {
        return 1.0;
    }
    let z = (u - mean - 0.5) / var.sqrt();
    upper_tail(z)
}

/// P(Z > z) for a standard normal Z.
pub fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' `erfcc`, a Chebyshev fit with a
/// fractional error below 1.2e-7 everywhere): plenty for comparing with an alpha.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_tail_matches_known_values() {
        for (z, p) in [
            (0.0, 0.5),
            (1.644_853_6, 0.05),
            (2.326_347_9, 0.01),
            (-1.959_964, 0.975),
        ] {
            assert!((upper_tail(z) - p).abs() < 1e-6, "z={z}: {}", upper_tail(z));
        }
    }

    #[test]
    fn a_shifted_sample_is_larger_and_the_same_one_is_not() {
        // By hand: ranks of x 3.5+5.5+7.5+9.5+11+12 = 49, U = 49 - 21 = 28, mean 18,
        // variance 36/12 * (13 - 4*6/132) = 38.4545 (four pairs of ties), z = (28 - 18 -
        // 0.5)/6.2012 = 1.53197, p = 0.062765 (what scipy's mannwhitneyu gives with
        // alternative='greater', method='asymptotic').
        let p = greater_p(&[3, 4, 5, 6, 7, 8], &[1, 2, 3, 4, 5, 6]);
        assert!((p - 0.062_765).abs() < 1e-5, "{p}");
        // The other direction: nowhere near.
        assert!(greater_p(&[1, 2, 3, 4, 5, 6], &[3, 4, 5, 6, 7, 8]) > 0.9);
        // Identical samples, all ties, empty samples: no evidence.
        let same: Vec<u32> = (0..200).map(|i| i % 17).collect();
        assert!(greater_p(&same, &same) > 0.4);
        assert_eq!(greater_p(&[5; 50], &[5; 50]), 1.0);
        assert_eq!(greater_p(&[], &[1, 2]), 1.0);
        // 40 % slower, with noise: clearly larger.
        let stable: Vec<u32> = (0..300).map(|i| 10 + (i * 7919 % 20)).collect();
        let slower: Vec<u32> = stable.iter().map(|v| v * 14 / 10).collect();
        assert!(greater_p(&slower[..60], &stable) < 1e-6);
    }
}
