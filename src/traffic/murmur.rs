//! nginx's MurmurHash2 (`ngx_murmur_hash2`, src/core/ngx_murmurhash.c) and the way
//! `split_clients` turns it into a bucket: a pure copy, so that slipway can say which
//! slot a key lands on without asking nginx. Checked against real nginx in
//! tests/traffic (every one of thousands of keys lands where this says).

/// nginx's MurmurHash2 of `data`: seed 0 xor the length, 4-byte little-endian blocks,
/// the tail, then the final mix. (This is MurmurHash2 as Austin Appleby wrote it, with
/// nginx's seed; its output is nginx's on every platform, since nginx reads the
/// blocks byte by byte.)
pub fn murmur_hash2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from(c[0])
            | (u32::from(c[1]) << 8)
            | (u32::from(c[2]) << 16)
            | (u32::from(c[3]) << 24);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// A percentage as nginx's `split_clients` reads it: hundredths of a percent (it
/// accepts two decimals, "12.34%").
pub fn hundredths(percent: f64) -> u32 {
    (percent * 100.0).round().clamp(0.0, 10000.0) as u32
}

/// Whether `split_clients` with a first entry of `percent` (then `*`) puts a value
/// whose hash is `hash` into that first entry. nginx sums the parts as
/// `hundredths × 0xffffffff / 10000` (64-bit) and picks the first part whose bound is
/// above the hash; `*` takes the rest. 0 % has no entry at all; 100 % takes everything.
pub fn in_first_part(hash: u32, percent: f64) -> bool {
    let h = hundredths(percent);
    if h == 0 {
        return false;
    }
    if h >= 10000 {
        return true;
    }
    let bound = (u64::from(h) * 0xffff_ffff / 10000) as u32;
    hash < bound
}

/// Whether the split string `salt` + `key` lands in the canary part at `percent`.
/// Growing the percentage only adds keys: the bound grows, the hash stays.
pub fn lands_on_canary(salt: &str, key: &str, percent: f64) -> bool {
    let mut s = Vec::with_capacity(salt.len() + key.len());
    s.extend_from_slice(salt.as_bytes());
    s.extend_from_slice(key.as_bytes());
    in_first_part(murmur_hash2(&s), percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // MurmurHash2 with seed = length: the empty string hashes to 0, and the
        // reference values below were computed with the C function nginx ships
        // (`ngx_murmur_hash2`, compiled on its own).
        assert_eq!(murmur_hash2(b""), 0);
        assert_eq!(murmur_hash2(b"a"), 0x92685f5e);
        assert_eq!(murmur_hash2(b"abcd"), 0x26873021);
        assert_eq!(murmur_hash2(b"hello, world"), 0x4b4c9d80);
    }

    #[test]
    fn growing_the_percentage_only_adds_keys() {
        let mut at = [0usize; 3];
        for i in 0..10_000 {
            let key = format!("user-{i}");
            let steps = [10.0, 50.0, 100.0].map(|p| lands_on_canary("s4lt:", &key, p));
            for (n, &on) in steps.iter().enumerate() {
                at[n] += on as usize;
            }
            // In at 10 % means in at 50 % and at 100 %.
            assert!(!steps[0] || steps[1]);
            assert!(!steps[1] || steps[2]);
        }
        assert!((800..=1200).contains(&at[0]), "{at:?}");
        assert!((4800..=5200).contains(&at[1]), "{at:?}");
        assert_eq!(at[2], 10_000);
        assert!(!lands_on_canary("s", "anything", 0.0));
    }

    #[test]
    fn hundredths_round_like_two_decimals() {
        assert_eq!(hundredths(10.0), 1000);
        assert_eq!(hundredths(12.345), 1235);
        assert_eq!(hundredths(0.01), 1);
    }
}
