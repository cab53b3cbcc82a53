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
/// The input of one zstd worker's job: bounds the compressor's memory (see [`encode`]).
const JOB_SIZE: u32 = 1 << 20;

/// A sampled stream must shrink to at most this share of its size to be sent as zstd:
/// zstd stores a block it cannot shrink as it is, at little cost (44.8 MB of incompressible
/// files in a tar stream: 0.12 s of CPU, 6 % smaller for the headers and padding), so a
/// few percent are worth it on an uplink.
const ZSTD_WORTH: f64 = 0.97;
/// The same for gzip, which spends its full effort on every byte (about 90 MB/s).
const GZIP_WORTH: f64 = 0.9;

/// How much of a stream [`pays`] compresses: this many evenly spread blocks of this size.
const SAMPLE_BLOCKS: u64 = 32;
const SAMPLE_BLOCK: u64 = 64 * 1024;

/// The encoding a host gets: `setting`, narrowed by the host's decompressors (`tools`,
/// from the probe) and, for `auto`, by how far a sample of the stream shrinks (`ratio`,
/// from [`ratio`]): zstd from 3 % saved, gzip from 10 %.
pub fn choose(setting: Compress, tools: &[String], ratio: f64) -> Encoding {
    let has = |t: &str| tools.iter().any(|x| x == t);
    match setting {
        Compress::Off => Encoding::Raw,
        Compress::Auto if has("zstd") && ratio <= ZSTD_WORTH => Encoding::Zstd,
        Compress::Auto if has("gzip") && ratio <= GZIP_WORTH => Encoding::Gzip,
        Compress::Auto => Encoding::Raw,
        Compress::Zstd if has("zstd") => Encoding::Zstd,
        Compress::Gzip if has("gzip") => Encoding::Gzip,
        Compress::Zstd | Compress::Gzip => Encoding::Raw,
    }
}

/// How far `input` shrinks: a sample of it (blocks spread over the whole stream, read
/// where they lie) compressed with zstd's fastest level, as a share of its size (1.0 for
/// a stream too short to be worth a look).
pub fn ratio(input: &Input) -> io::Result<f64> {
    let len = input.len();
    if len < 4096 {
        return Ok(1.0);
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
    Ok(packed.len() as f64 / sample.len().max(1) as f64)
}

/// Encodes each distinct payload once per encoding, for every host that gets it.
pub struct Encoder {
    setting: Compress,
    /// By payload (its `Arc` address: the payloads outlive the encoder's use): how far a
    /// sample of it shrinks.
    ratios: HashMap<usize, f64>,
    done: HashMap<(usize, Encoding), Arc<Input>>,
}

impl Encoder {
    pub fn new(setting: Compress) -> Encoder {
        Encoder {
            setting,
            ratios: HashMap::new(),
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
        let ratio = match self.setting {
            Compress::Auto => match self.ratios.get(&key) {
                Some(&r) => r,
                None => {
                    let r = ratio(raw)?;
                    self.ratios.insert(key, r);
                    r
                }
            },
            _ => 0.0,
        };
        let encoding = choose(self.setting, tools, ratio);
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
                // 1 MiB jobs: zstd's default for level 3 (8 MiB, several buffered per
                // worker) raised the deployer's peak RSS by 37-50 MB for a 30-45 MB
                // stream; 1 MiB jobs by 8-10 MB, for an output ~5 % larger.
                z.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
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
        let gzip = tools(&["gzip"]);
        assert_eq!(choose(Compress::Auto, &both, 0.3), Encoding::Zstd);
        assert_eq!(choose(Compress::Auto, &gzip, 0.3), Encoding::Gzip);
        assert_eq!(choose(Compress::Auto, &[], 0.3), Encoding::Raw);
        assert_eq!(choose(Compress::Auto, &both, 0.99), Encoding::Raw);
        // A few percent (tar headers around incompressible files): worth zstd's cheap
        // pass, not gzip's full one.
        assert_eq!(choose(Compress::Auto, &both, 0.94), Encoding::Zstd);
        assert_eq!(choose(Compress::Auto, &gzip, 0.94), Encoding::Raw);
    }

    #[test]
    fn a_forced_codec_is_used_even_on_incompressible_data_but_only_where_the_host_has_it() {
        let both = tools(&["zstd", "gzip"]);
        assert_eq!(choose(Compress::Zstd, &both, 1.0), Encoding::Zstd);
        assert_eq!(
            choose(Compress::Zstd, &tools(&["gzip"]), 0.3),
            Encoding::Raw
        );
        assert_eq!(choose(Compress::Gzip, &both, 1.0), Encoding::Gzip);
        assert_eq!(
            choose(Compress::Gzip, &tools(&["zstd"]), 0.3),
            Encoding::Raw
        );
        assert_eq!(choose(Compress::Off, &both, 0.3), Encoding::Raw);
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
        let pays = |input: &Input| ratio(input).unwrap() <= ZSTD_WORTH;
        assert!(pays(&Input::bytes(text)));
        assert!(!pays(&Input::bytes(noise(3 << 20))));
        // Short streams are sampled without counting a byte twice.
        assert!(!pays(&Input::bytes(noise(1 << 20))));
        assert!(!pays(&Input::bytes(noise(100_000))));
        // A spooled stream and its tail are read where they lie.
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &noise(5 << 20)).unwrap();
        let spooled = Input::spooled(Arc::new(file), 5 << 20, b"tail".repeat(1000));
        assert!(!pays(&spooled));
        // Incompressible files in 512-byte tar blocks with their headers: a few percent.
        let data = noise(200 * 15_000);
        let mut tar = Vec::new();
        for k in 0..200usize {
            let name = format!("assets/file{k:08}.bin");
            let mut header = vec![0u8; 512];
            header[..name.len()].copy_from_slice(name.as_bytes());
            tar.extend_from_slice(&header);
            tar.extend_from_slice(&data[k * 15_000..k * 15_000 + 14_000 + k]);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        let r = ratio(&Input::bytes(tar)).unwrap();
        assert!((0.9..=ZSTD_WORTH).contains(&r), "{r}");
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

    /// This process's peak resident set, in KiB.
    fn peak_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[test]
    fn compressing_a_large_stream_holds_little_of_it_in_memory() {
        // Measured in a process of its own: the other tests of this binary allocate too.
        const CHILD: &str = "SLIPWAY_TEST_COMPRESS_RSS";
        let name =
            "deploy::compress::tests::compressing_a_large_stream_holds_little_of_it_in_memory";
        if std::env::var_os(CHILD).is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture", "--test-threads", "1"])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stderr);
            eprintln!("{said}");
            assert!(out.status.success(), "{said}");
            assert!(said.contains("peak RSS grew by"), "{said}");
            return;
        }
        // 30 MB of text written to a file in pieces, so that the peak before is small.
        let mut file = tempfile::tempfile().unwrap();
        let mut len = 0u64;
        for c in 0..100u64 {
            let text: Vec<u8> = (0..10_000u64)
                .flat_map(|i| {
                    format!(
                        "line {i} {c} of a log, {}\n",
                        (i * 7919 + c * 104_729) % 1_000_003
                    )
                    .into_bytes()
                })
                .collect();
            std::io::Write::write_all(&mut file, &text).unwrap();
            len += text.len() as u64;
        }
        let input = Input::spooled(Arc::new(file), len, Vec::new());
        let before = peak_kib();
        let out = encode(&input, Encoding::Zstd).unwrap();
        let grew = peak_kib().saturating_sub(before);
        eprintln!("{len} bytes to {}: peak RSS grew by {grew} KiB", out.len());
        assert!(out.len() * 4 < len);
        // zstd's own default jobs grew it by ~37 MB here; 1 MiB jobs by ~8 MB.
        assert!(grew < 20 * 1024, "peak RSS grew by {grew} KiB");
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
