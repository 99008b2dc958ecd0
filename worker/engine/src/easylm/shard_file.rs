//! One output file written front to back, through `O_DIRECT` where the filesystem takes it.
//!
//! Buffered writes of multi-GB shards cost the kernel a page-cache copy and allocation per page:
//! on the bench VM that was most of `worker convert`'s CPU (`copy_folio_from_iter_atomic`, about
//! half of all samples). Direct writes hand aligned 8 MB blocks to the device instead and leave the
//! CPU to the transposes. Data is staged in one aligned buffer; the unaligned tail of the file goes
//! through an ordinary descriptor. Any filesystem that refuses `O_DIRECT` (at open or on a write)
//! gets ordinary positioned writes of the same blocks, so the result is the same file either way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of direct I/O (the largest logical block size in common use).
const ALIGN: usize = 4096;
/// Bytes staged before a write.
const STAGE: usize = 8 << 20;

pub struct ShardFile {
    buffered: File,
    direct: Option<File>,
    /// `STAGE + ALIGN` bytes; the staged data starts at `start`, which is 4096-aligned in memory
    stage: Vec<u8>,
    start: usize,
    filled: usize,
    /// file offset of the first staged byte
    offset: u64,
}

impl ShardFile {
    /// Creates (truncates) `path`, reserving `len` bytes.
    pub fn create(path: &Path, len: u64) -> io::Result<Self> {
        let buffered = File::create(path)?;
        preallocate(&buffered, len);
        let stage = vec![0u8; STAGE + ALIGN];
        let start = stage.as_ptr().align_offset(ALIGN);
        let direct = if start < ALIGN {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        } else {
            None
        };
        Ok(Self {
            buffered,
            direct,
            stage,
            start: start.min(ALIGN),
            filled: 0,
            offset: 0,
        })
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (STAGE - self.filled).min(data.len());
            let at = self.start + self.filled;
            self.stage[at..at + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == STAGE {
                self.write_staged(STAGE)?;
            }
        }
        Ok(())
    }

    /// Writes the first `n` staged bytes (a multiple of `ALIGN` for direct I/O).
    fn write_staged(&mut self, n: usize) -> io::Result<()> {
        let block = &self.stage[self.start..self.start + n];
        let direct_ok = n.is_multiple_of(ALIGN) && self.offset.is_multiple_of(ALIGN as u64);
        match self.direct.as_ref().filter(|_| direct_ok) {
            Some(direct) => {
                if let Err(e) = direct.write_all_at(block, self.offset) {
                    if e.raw_os_error() != Some(libc::EINVAL) {
                        return Err(e);
                    }
                    // the filesystem wants something else: ordinary writes from here on
                    self.direct = None;
                    self.buffered.write_all_at(block, self.offset)?;
                }
            }
            None => self.buffered.write_all_at(block, self.offset)?,
        }
        self.offset += n as u64;
        self.stage
            .copy_within(self.start + n..self.start + self.filled, self.start);
        self.filled -= n;
        Ok(())
    }

    /// Writes what is staged; returns the file's length.
    pub fn finish(mut self) -> io::Result<u64> {
        let aligned = self.filled / ALIGN * ALIGN;
        if aligned > 0 {
            self.write_staged(aligned)?;
        }
        if self.filled > 0 {
            let tail = &self.stage[self.start..self.start + self.filled];
            self.buffered.write_all_at(tail, self.offset)?;
            self.offset += self.filled as u64;
        }
        Ok(self.offset)
    }
}

/// Reserves the file's blocks up front (ext4 writes multi-GB files much faster into reserved
/// extents). Best effort: without fallocate the filesystem allocates as it goes.
fn preallocate(file: &File, len: u64) {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(len) else {
        return;
    };
    if len == 0 {
        return;
    }
    // SAFETY: a valid open descriptor and a positive length; no memory is involved.
    let _ = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_same_bytes_at_any_sizes() {
        let dir = tempfile::tempdir().unwrap();
        // data that crosses stage boundaries and ends unaligned
        let data: Vec<u8> = (0..(STAGE * 2 + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for pieces in [1usize, 3, 1000, 4096] {
            let path = dir.path().join(format!("f{pieces}"));
            let mut file = ShardFile::create(&path, data.len() as u64).unwrap();
            for chunk in data.chunks(data.len() / pieces + 1) {
                file.write_all(chunk).unwrap();
            }
            assert_eq!(file.finish().unwrap(), data.len() as u64);
            assert!(std::fs::read(&path).unwrap() == data, "{pieces} pieces");
        }
    }
}
