//! A tar stream spooled to an unlinked temporary file: written once, then read by any
//! number of uploads at the same time, each at its own offset (`pread`). Memory holds
//! one chunk per upload, not the archive, however large the release or the fleet; the
//! file is gone when the last handle closes, even if slipway is killed.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The two zero blocks that end a tar stream.
const END_MARKER: u64 = 1024;

pub type SpoolBuilder = tar::Builder<BufWriter<File>>;

#[derive(Clone, Debug)]
pub struct Spool {
    file: Arc<File>,
    len: u64,
}

impl Spool {
    /// A tar builder writing into a new unlinked file in `$TMPDIR`.
    pub fn builder() -> io::Result<SpoolBuilder> {
        let file = tempfile::tempfile()?;
        Ok(tar::Builder::new(BufWriter::with_capacity(1 << 20, file)))
    }

    /// Ends the stream (its end marker) and makes it readable.
    pub fn finish(builder: SpoolBuilder) -> io::Result<Spool> {
        let file = builder
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?;
        let len = file.metadata()?.len();
        Ok(Spool {
            file: Arc::new(file),
            len,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The length without the end marker: where more entries can follow.
    pub fn body_len(&self) -> u64 {
        self.len.saturating_sub(END_MARKER)
    }

    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Reads the stream from its start (independently of any other reader).
    pub fn reader(&self) -> SpoolReader {
        SpoolReader {
            file: Arc::clone(&self.file),
            pos: 0,
            len: self.len,
        }
    }

    /// The whole stream in memory (for tests and small comparisons).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len as usize);
        self.reader().read_to_end(&mut out)?;
        Ok(out)
    }
}

pub struct SpoolReader {
    file: Arc<File>,
    pos: u64,
    len: u64,
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spooled archive is shorter than it was written",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Lets a tar reader skip the contents of entries it does not want (an incremental
/// payload picks 20 files out of 3,000 without reading the other 40 MiB).
impl Seek for SpoolReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        match target {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the spooled archive",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_are_independent_and_the_body_excludes_the_end_marker() {
        let mut b = Spool::builder().unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "a.txt", &b"abc"[..]).unwrap();
        let spool = Spool::finish(b).unwrap();
        assert_eq!(spool.len(), 512 + 512 + 1024);
        assert_eq!(spool.body_len(), 1024);
        let mut one = spool.reader();
        let mut first = [0u8; 100];
        one.read_exact(&mut first).unwrap();
        let all = spool.to_vec().unwrap();
        assert_eq!(all.len() as u64, spool.len());
        assert_eq!(&all[..100], &first[..]);
        let mut rest = Vec::new();
        one.read_to_end(&mut rest).unwrap();
        assert_eq!(&all[100..], &rest[..]);
        let mut archive = tar::Archive::new(spool.reader());
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        assert_eq!(text, "abc");
    }

    #[test]
    fn a_reader_seeks_within_the_stream_and_not_before_it() {
        let mut b = Spool::builder().unwrap();
        for (name, body) in [("a.txt", &b"first"[..]), ("b.txt", &b"second"[..])] {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, body).unwrap();
        }
        let spool = Spool::finish(b).unwrap();
        let all = spool.to_vec().unwrap();
        let mut r = spool.reader();
        assert_eq!(r.seek(SeekFrom::Start(1024)).unwrap(), 1024);
        let mut header = [0u8; 512];
        r.read_exact(&mut header).unwrap();
        assert_eq!(&header[..], &all[1024..1536]);
        assert_eq!(r.seek(SeekFrom::Current(-512)).unwrap(), 1024);
        assert_eq!(r.seek(SeekFrom::End(0)).unwrap(), spool.len());
        assert!(
            r.seek(SeekFrom::Current(-(spool.len() as i64) - 1))
                .is_err()
        );
        // The tar reader skips the first file's contents by seeking.
        let mut archive = tar::Archive::new(spool.reader());
        let names: Vec<String> = archive
            .entries_with_seek()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
    }
}
