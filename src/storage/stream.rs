//! Streaming I/O on a [`Location`]: [`ObjectWriter`] uploads while the caller is still producing bytes,
//! [`RangeReader`] reads in blocks with the next block already in flight.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::{gcs, Location, Result, StorageError};

/// Bytes handed to the uploader at a time. A multiple of 256 KiB, as GCS resumable uploads require.
pub(super) const UPLOAD_PART: usize = 16 << 20;
/// Bytes fetched per ranged read; the next block is fetched while the caller consumes this one.
const READ_BLOCK: u64 = 16 << 20;

enum Part {
    Data(Vec<u8>),
    Finish,
}

/// A new file being written. Local: a buffered file, synced by [`ObjectWriter::finish`]. GCS: a resumable
/// upload fed by a background thread, so the caller's encoding and the network overlap; the object
/// appears only when `finish` succeeds, and a writer dropped unfinished aborts its upload.
pub struct ObjectWriter {
    loc: Location,
    inner: WriterKind,
    written: u64,
}

enum WriterKind {
    Local(io::BufWriter<std::fs::File>),
    Gcs { buf: Vec<u8>, tx: Option<mpsc::SyncSender<Part>>, uploader: Option<JoinHandle<Result<()>>> },
}

impl ObjectWriter {
    pub(super) fn create(loc: Location) -> Result<ObjectWriter> {
        let inner = match &loc {
            Location::Local(p) => {
                if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(d).map_err(|source| StorageError::Io { op: "create the directory of", loc: loc.to_string(), source })?;
                }
                let f = std::fs::File::create(p).map_err(|source| StorageError::Io { op: "create", loc: loc.to_string(), source })?;
                WriterKind::Local(io::BufWriter::with_capacity(1 << 20, f))
            }
            Location::Gcs { bucket, key } => {
                let mut upload = gcs::Upload::start(bucket, key)?;
                // Two parts in flight at most: memory stays bounded while the upload keeps the link busy.
                let (tx, rx) = mpsc::sync_channel::<Part>(2);
                let uploader = std::thread::spawn(move || {
                    while let Ok(part) = rx.recv() {
                        match part {
                            Part::Data(bytes) => upload.write(bytes)?,
                            Part::Finish => return upload.finish(),
                        }
                    }
                    upload.abort();
                    Ok(())
                });
                WriterKind::Gcs { buf: Vec::with_capacity(UPLOAD_PART), tx: Some(tx), uploader: Some(uploader) }
            }
        };
        Ok(ObjectWriter { loc, inner, written: 0 })
    }

    pub fn location(&self) -> &Location {
        &self.loc
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.written
    }

    /// Flushes, syncs (local) or completes the upload (GCS); the file exists only once this returns Ok.
    pub fn finish(mut self) -> Result<()> {
        match &mut self.inner {
            WriterKind::Local(w) => {
                w.flush().map_err(|source| StorageError::Io { op: "write", loc: self.loc.to_string(), source })?;
                w.get_ref().sync_all().map_err(|source| StorageError::Io { op: "sync", loc: self.loc.to_string(), source })
            }
            WriterKind::Gcs { buf, tx, uploader } => {
                let tx = tx.take().expect("finish called once");
                let rest = std::mem::take(buf);
                // A failed send means the uploader already stopped; its result says why.
                let _ = (rest.is_empty() || tx.send(Part::Data(rest)).is_ok()) && tx.send(Part::Finish).is_ok();
                drop(tx);
                join_uploader(uploader.take().expect("uploader present"), &self.loc)
            }
        }
    }
}

fn join_uploader(h: JoinHandle<Result<()>>, loc: &Location) -> Result<()> {
    h.join().unwrap_or_else(|_| Err(StorageError::Remote { op: "upload", loc: loc.to_string(), detail: "the upload thread panicked".into() }))
}

impl Write for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            WriterKind::Local(w) => w.write_all(data)?,
            WriterKind::Gcs { buf, tx, uploader } => {
                buf.extend_from_slice(data);
                if buf.len() >= UPLOAD_PART {
                    let part = std::mem::replace(buf, Vec::with_capacity(UPLOAD_PART));
                    let sent = tx.as_ref().is_some_and(|tx| tx.send(Part::Data(part)).is_ok());
                    if !sent {
                        // The uploader stopped early: surface its error now rather than at finish.
                        let err = match uploader.take() {
                            Some(h) => join_uploader(h, &self.loc).err(),
                            None => None,
                        };
                        let msg = err.map_or_else(|| format!("upload of {} already ended", self.loc), |e| e.to_string());
                        return Err(io::Error::other(msg));
                    }
                }
            }
        }
        self.written += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            WriterKind::Local(w) => w.flush(),
            // Parts go out as they fill; the object is completed only by `finish`.
            WriterKind::Gcs { .. } => Ok(()),
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let WriterKind::Gcs { tx, uploader, .. } = &mut self.inner {
            // Unfinished: closing the channel without `Finish` makes the uploader abort the upload.
            drop(tx.take());
            if let Some(h) = uploader.take() {
                let _ = h.join();
            }
        }
    }
}

/// A seekable reader over a file. Local: the file itself. GCS: ranged reads of [`READ_BLOCK`] bytes,
/// the next block fetched in the background while the current one is consumed.
pub struct RangeReader {
    loc: Location,
    len: u64,
    pos: u64,
    kind: ReaderKind,
}

enum ReaderKind {
    Local(io::BufReader<std::fs::File>),
    Gcs { block_start: u64, block: Vec<u8>, ahead: Option<(u64, JoinHandle<Result<Vec<u8>>>)> },
}

impl RangeReader {
    pub(super) fn open(loc: Location) -> Result<RangeReader> {
        let len = loc.size()?.ok_or_else(|| StorageError::NotFound { loc: loc.to_string() })?;
        let kind = match &loc {
            Location::Local(p) => {
                let f = std::fs::File::open(p).map_err(|source| StorageError::Io { op: "open", loc: loc.to_string(), source })?;
                ReaderKind::Local(io::BufReader::with_capacity(1 << 20, f))
            }
            Location::Gcs { .. } => ReaderKind::Gcs { block_start: 0, block: vec![], ahead: None },
        };
        Ok(RangeReader { loc, len, pos: 0, kind })
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn location(&self) -> &Location {
        &self.loc
    }

    fn fetch(loc: &Location, start: u64, len: u64) -> JoinHandle<Result<Vec<u8>>> {
        let loc = loc.clone();
        std::thread::spawn(move || loc.read_range(start, len))
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let (loc, len, pos) = (&self.loc, self.len, self.pos);
        let n = match &mut self.kind {
            ReaderKind::Local(f) => f.read(out)?,
            ReaderKind::Gcs { block_start, block, ahead } => {
                if pos >= len {
                    return Ok(0);
                }
                if pos < *block_start || pos >= *block_start + block.len() as u64 {
                    let want = pos - pos % READ_BLOCK;
                    *block = match ahead.take() {
                        Some((s, h)) if s == want => h.join().map_err(|_| io::Error::other("read-ahead thread panicked"))??,
                        _ => loc.read_range(want, READ_BLOCK.min(len - want))?,
                    };
                    *block_start = want;
                    let next = want + block.len() as u64;
                    if next < len {
                        *ahead = Some((next, RangeReader::fetch(loc, next, READ_BLOCK.min(len - next))));
                    }
                }
                let off = (pos - *block_start) as usize;
                let n = out.len().min(block.len() - off);
                out[..n].copy_from_slice(&block[off..off + n]);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if new < 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the file"));
        }
        self.pos = new as u64;
        if let ReaderKind::Local(f) = &mut self.kind {
            f.seek(SeekFrom::Start(self.pos))?;
        }
        Ok(self.pos)
    }
}
