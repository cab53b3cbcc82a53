//! Compression of the release stream on the wire. From a laptop or a small CI runner the
//! uplink is the limit, not the CPU: a stream that compresses is compressed once, on the
//! deployer, and the same compressed bytes go to every host that can decode them.
//!
//! Which encoding a host gets is a plain decision ([`choose`]) over the setting, the
//! decompressors the probe found on the host, and whether a sample of the stream
//! compresses at all ([`pays`]): a release of already-compressed files (images, archives,
//! media) is sent as it is, so no CPU is spent for nothing.
//!
//! Levels: zstd level 3 (multithreaded, one worker per core, at most 4), gzip level 1.
//! Both compress far faster than any uplink they are meant for (see docs/BENCHMARKS.md
//! for the measured rates), and since each payload is compressed once whatever the number
//! of hosts, compression cannot become the bottleneck of a fleet-wide upload; on a fast
//! LAN, `compress = "off"` saves the (small) time it takes before the first byte leaves.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::config::Compress;
use crate::script::Encoding;
use crate::transport::Input;

const ZSTD_LEVEL: i32 = 3;
const GZIP_LEVEL: u32 = 1;

/// A sampled stream must shrink to at most this share of its size to be worth it.
const WORTH: f64 = 0.9;

/// How much of a stream [`pays`] compresses: this many evenly spread blocks of this size.
const SAMPLE_BLOCKS: u64 = 32;
const SAMPLE_BLOCK: u64 = 64 * 1024;

/// The encoding a host gets: `setting`, narrowed by the host's decompressors (`tools`,
/// from the probe) and by whether the stream compresses at all (`pays`).
pub fn choose(setting: Compress, tools: &[String], pays: bool) -> Encoding {
    let has = |t: &str| tools.iter().any(|x| x == t);
    match setting {
        Compress::Off => Encoding::Raw,
        Compress::Auto if !pays => Encoding::Raw,
        Compress::Auto if has("zstd") => Encoding::Zstd,
        Compress::Auto | Compress::Gzip if has("gzip") => Encoding::Gzip,
        Compress::Zstd if has("zstd") => Encoding::Zstd,
        Compress::Auto | Compress::Zstd | Compress::Gzip => Encoding::Raw,
    }
}

/// Whether compressing `input` pays: a sample of it (blocks spread over the whole
/// stream, read where they lie) compressed with zstd's fastest level shrinks to at most
/// 90 %.
pub fn pays(input: &Input) -> io::Result<bool> {
    let len = input.len();
    if len < 4096 {
        return Ok(false);
    }
    // A short stream is read whole; a longer one in disjoint blocks (never a byte twice:
    // repeated bytes would compress and pass for a compressible stream).
    let (blocks, stride) = if len <= SAMPLE_BLOCK * SAMPLE_BLOCKS {
        (len.div_ceil(SAMPLE_BLOCK), SAMPLE_BLOCK)
    } else {
        (SAMPLE_BLOCKS, len / SAMPLE_BLOCKS)
    };
    let mut sample = Vec::new();
    let mut block = vec![0u8; SAMPLE_BLOCK as usize];
    for k in 0..blocks {
        let n = input.read_at(stride * k, &mut block)?;
        sample.extend_from_slice(&block[..n]);
    }
    let packed = zstd::bulk::compress(&sample, 1)?;
    Ok((packed.len() as f64) <= WORTH * sample.len() as f64)
}

/// Encodes each distinct payload once per encoding, for every host that gets it.
pub struct Encoder {
    setting: Compress,
    /// By payload (its `Arc` address: the payloads outlive the encoder's use).
    pays: HashMap<usize, bool>,
    done: HashMap<(usize, Encoding), Arc<Input>>,
}

impl Encoder {
    pub fn new(setting: Compress) -> Encoder {
        Encoder {
            setting,
            pays: HashMap::new(),
            done: HashMap::new(),
        }
    }

    /// What a host with decompressors `tools` receives for `raw`, and how it is encoded.
    pub fn for_host(
        &mut self,
        raw: &Arc<Input>,
        tools: &[String],
    ) -> io::Result<(Arc<Input>, Encoding)> {
        let key = Arc::as_ptr(raw) as usize;
        let pays = match self.setting {
            Compress::Auto => match self.pays.get(&key) {
                Some(&p) => p,
                None => {
                    let p = pays(raw)?;
                    self.pays.insert(key, p);
                    p
                }
            },
            _ => true,
        };
        let encoding = choose(self.setting, tools, pays);
        if encoding == Encoding::Raw {
            return Ok((Arc::clone(raw), encoding));
        }
        if let Some(done) = self.done.get(&(key, encoding)) {
            return Ok((Arc::clone(done), encoding));
        }
        let encoded = Arc::new(encode(raw, encoding)?);
        self.done.insert((key, encoding), Arc::clone(&encoded));
        Ok((encoded, encoding))
    }
}

/// `input` encoded as `encoding`, spooled to an unlinked temporary file (read by every
/// host's upload at its own offset, like the archive itself).
pub fn encode(input: &Input, encoding: Encoding) -> io::Result<Input> {
    let file = tempfile::tempfile()?;
    let out = io::BufWriter::with_capacity(1 << 20, file);
    let out = match encoding {
        Encoding::Raw => {
            let mut out = out;
            input.write_to(&mut out)?;
            out
        }
        Encoding::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
            if workers > 1 {
                z.multithread(workers as u32)?;
            }
            input.write_to(&mut z)?;
            z.finish()?
        }
        Encoding::Gzip => {
            let mut z = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            input.write_to(&mut z)?;
            z.finish()?
        }
    };
    let file = out.into_inner().map_err(|e| e.into_error())?;
    let len = file.metadata()?.len();
    Ok(Input::spooled(Arc::new(file), len, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auto_prefers_zstd_then_gzip_and_skips_what_does_not_compress() {
        let both = tools(&["zstd", "gzip"]);
        assert_eq!(choose(Compress::Auto, &both, true), Encoding::Zstd);
        assert_eq!(
            choose(Compress::Auto, &tools(&["gzip"]), true),
            Encoding::Gzip
        );
        assert_eq!(choose(Compress::Auto, &[], true), Encoding::Raw);
        assert_eq!(choose(Compress::Auto, &both, false), Encoding::Raw);
    }

    #[test]
    fn a_forced_codec_is_used_even_on_incompressible_data_but_only_where_the_host_has_it() {
        let both = tools(&["zstd", "gzip"]);
        assert_eq!(choose(Compress::Zstd, &both, false), Encoding::Zstd);
        assert_eq!(
            choose(Compress::Zstd, &tools(&["gzip"]), true),
            Encoding::Raw
        );
        assert_eq!(choose(Compress::Gzip, &both, false), Encoding::Gzip);
        assert_eq!(
            choose(Compress::Gzip, &tools(&["zstd"]), true),
            Encoding::Raw
        );
        assert_eq!(choose(Compress::Off, &both, true), Encoding::Raw);
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    #[test]
    fn text_pays_and_noise_does_not() {
        let text: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("line {i} of a log file\n").into_bytes())
            .collect();
        assert!(pays(&Input::bytes(text)).unwrap());
        assert!(!pays(&Input::bytes(noise(3 << 20))).unwrap());
        // Short streams are sampled without counting a byte twice.
        assert!(!pays(&Input::bytes(noise(1 << 20))).unwrap());
        assert!(!pays(&Input::bytes(noise(100_000))).unwrap());
        // A spooled stream and its tail are read where they lie.
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &noise(5 << 20)).unwrap();
        let spooled = Input::spooled(Arc::new(file), 5 << 20, b"tail".repeat(1000));
        assert!(!pays(&spooled).unwrap());
    }

    fn decode(encoding: Encoding, input: &Input) -> Vec<u8> {
        let mut packed = Vec::new();
        input.write_to(&mut packed).unwrap();
        let mut out = Vec::new();
        match encoding {
            Encoding::Zstd => {
                zstd::stream::copy_decode(&packed[..], &mut out).unwrap();
            }
            Encoding::Gzip => {
                io::copy(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out).unwrap();
            }
            Encoding::Raw => out = packed,
        }
        out
    }

    #[test]
    fn encoded_streams_decode_to_the_same_bytes() {
        let mut data: Vec<u8> = (0..100_000).flat_map(|i: u32| i.to_le_bytes()).collect();
        data.extend(noise(100_000));
        for encoding in [Encoding::Raw, Encoding::Zstd, Encoding::Gzip] {
            let encoded = encode(&Input::bytes(data.clone()), encoding).unwrap();
            assert_eq!(decode(encoding, &encoded), data, "{encoding:?}");
            if encoding != Encoding::Raw {
                assert!(encoded.len() < data.len() as u64, "{encoding:?}");
            }
        }
    }
}
