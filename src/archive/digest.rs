//! The digests of a file's content: blake3 in the manifest (fast, and what the manifest
//! digest is taken with), SHA-256 and BLAKE2b-256 for the hosts, which check a release
//! with coreutils' `sha256sum -c` or `b2sum -c` (see [`check_list`](super::check_list)).

/// The digests a host checks a release with: one list per tool, so a host without
/// `b2sum` (busybox) still checks with `sha256sum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    Sha256,
    Blake2b,
}

/// The blake3 hex digest of `data`.
pub(super) fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

pub(super) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn blake2b_hex(data: &[u8]) -> String {
    use blake2::Digest;
    let digest = blake2::Blake2b::<blake2::digest::consts::U32>::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
