//! Reading a source into chunks of whole lines.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Source;

/// Whole lines of one source; `first_line` is the 1-based number of its first line.
pub struct Chunk {
    pub source: usize,
    pub first_line: u64,
    pub data: Vec<u8>,
}

/// How reading a source ended.
pub struct ReadOutcome {
    pub lines: u64,
    pub bytes: u64,
    /// BLAKE3 of the bytes as stored (compressed, for a .gz): what `b3sum` prints.
    pub blake3: String,
    /// Why the source ended early (a damaged gzip stream, a read error).
    pub error: Option<String>,
}

/// Counts and hashes the bytes as they are read from disk.
struct Tap<R> {
    inner: R,
    hash: blake3::Hasher,
    bytes: u64,
    progress: Arc<AtomicU64>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        self.progress.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

const CHUNK: usize = 4 << 20;

/// Reads `source` and hands chunks of whole lines to `send` (which returns false to stop).
pub fn read_chunks(
    index: usize,
    source: &Source,
    progress: Arc<AtomicU64>,
    recycled: &crossbeam_channel::Receiver<Vec<u8>>,
    mut send: impl FnMut(Chunk) -> bool,
) -> io::Result<ReadOutcome> {
    let raw: Box<dyn Read> = if let Some(open) = &source.opener {
        (open.0)()?
    } else if let Some((remote, path)) = &source.object {
        Box::new(crate::store::StreamReader::object(remote, path)?)
    } else if source.is_stdin() {
        Box::new(io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&source.path)?)
    };
    let mut tap = Tap {
        inner: raw,
        hash: blake3::Hasher::new(),
        bytes: 0,
        progress,
    };
    let mut error = None;
    let mut lines = 0u64;
    {
        let mut reader: Box<dyn Read + '_> = if source.gzip {
            Box::new(flate2::read::MultiGzDecoder::new(&mut tap))
        } else {
            Box::new(&mut tap)
        };
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + (CHUNK >> 2));
        let mut first = true;
        let mut eof = false;
        // How full the buffer should get before lines are cut off: a chunk, more for a longer line.
        let mut target = CHUNK;
        while !eof {
            while buf.len() < target {
                let start = buf.len();
                // Zeroed in steps that double with what was read (64 KiB first): a small file
                // touches no more of a fresh buffer than it fills.
                let step = (target - start).min(start.max(64 << 10)).max(64 << 10);
                buf.resize(start + step, 0);
                match reader.read(&mut buf[start..]) {
                    Ok(0) => {
                        buf.truncate(start);
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        buf.truncate(start + n);
                        // A pipe that has no more for now (a short read): hand over the whole
                        // lines we have rather than wait for a full chunk.
                        if n < step && source.is_stdin() && buf[start..].contains(&b'\n') {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
                    Err(e) => {
                        buf.truncate(start);
                        error = Some(describe(source, &e));
                        eof = true;
                        break;
                    }
                }
            }
            if first && buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
            first = false;
            // Send the whole lines; keep the rest for the next round.
            let cut = if eof {
                buf.len()
            } else {
                match memrchr(b'\n', &buf) {
                    Some(i) => i + 1,
                    None => {
                        // A line longer than a chunk: read on.
                        target = buf.len() + CHUNK;
                        continue;
                    }
                }
            };
            if cut == 0 {
                continue;
            }
            target = CHUNK;
            // The rest goes into a buffer a worker is done with, or a new one.
            let mut next = recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK + (CHUNK >> 2)));
            next.clear();
            next.extend_from_slice(&buf[cut..]);
            buf.truncate(cut);
            let data = std::mem::replace(&mut buf, next);
            let n = count_lines(&data);
            let chunk = Chunk {
                source: index,
                first_line: lines + 1,
                data,
            };
            lines += n;
            if !send(chunk) {
                break;
            }
        }
    }
    Ok(ReadOutcome {
        lines,
        bytes: tap.bytes,
        blake3: tap.hash.finalize().to_hex().to_string(),
        error,
    })
}

fn describe(source: &Source, e: &io::Error) -> String {
    if source.gzip {
        format!("the gzip data is damaged or truncated ({e})")
    } else {
        format!("read error ({e})")
    }
}

fn memrchr(b: u8, s: &[u8]) -> Option<usize> {
    memchr::memrchr(b, s)
}

/// Lines in a chunk: newlines, plus one for a last line without a newline.
fn count_lines(data: &[u8]) -> u64 {
    let n = memchr::memchr_iter(b'\n', data).count() as u64;
    if data.last().is_some_and(|&c| c != b'\n') {
        n + 1
    } else {
        n
    }
}
