//! How a release stream travels to a host (see `deploy::compress` for the choice).

/// How the release stream travels: as a plain tar stream, or compressed (decompressed
/// on the host before `tar -x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encoding {
    Raw,
    Zstd,
    Gzip,
}

impl Encoding {
    /// The host's command that turns the stream on its stdin back into the tar stream.
    pub fn decoder(self) -> Option<&'static str> {
        match self {
            Encoding::Raw => None,
            Encoding::Zstd => Some("zstd -d -q -c"),
            Encoding::Gzip => Some("gzip -d -c"),
        }
    }

    /// As reported: `raw`, `zstd`, `gzip`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}
