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

/// The three digests of one file, fed as it streams into the archive: a file is read
/// once, in chunks, never held whole in memory (a release may carry a file of
/// gigabytes).
pub(super) struct FileDigests {
    blake3: blake3::Hasher,
    sha256: sha2::Sha256,
    blake2b: blake2::Blake2b<blake2::digest::consts::U32>,
}

impl FileDigests {
    pub(super) fn new() -> FileDigests {
        use blake2::Digest as _;
        FileDigests {
            blake3: blake3::Hasher::new(),
            sha256: sha2::Sha256::new(),
            blake2b: blake2::Blake2b::new(),
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        use blake2::Digest as _;
        self.blake3.update(data);
        self.sha256.update(data);
        self.blake2b.update(data);
    }

    /// (blake3, SHA-256, BLAKE2b-256), in hex.
    pub(super) fn finish(self) -> (String, String, String) {
        use blake2::Digest as _;
        (
            self.blake3.finalize().to_hex().to_string(),
            hex(&self.sha256.finalize()),
            hex(&self.blake2b.finalize()),
        )
    }
}

/// `bytes` in lowercase hex, as the coreutils digest tools print them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The blake3 hex digest of `data`.
pub(super) fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

#[cfg(test)]
fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

#[cfg(test)]
fn blake2b_hex(data: &[u8]) -> String {
    use blake2::Digest;
    hex(&blake2::Blake2b::<blake2::digest::consts::U32>::digest(
        data,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_digests_equal_the_whole_buffer_ones() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut d = FileDigests::new();
        for chunk in data.chunks(4093) {
            d.update(chunk);
        }
        assert_eq!(
            d.finish(),
            (blake3_hex(&data), sha256_hex(&data), blake2b_hex(&data))
        );
    }
}
