//! The run journal: what an interrupted run had durably finished, so that running the
//! same workload again computes only the rest.
//!
//! One file next to the first output, `.NAME.drover-journal`: a header with the run's
//! fingerprint (plan, drover version, and each input file's path, size and
//! modification time), then append-only records, each with a CRC:
//! - a reduction partial as the worker sent it (task id + raw bytes);
//! - write-stage blocks, recorded only after the temporary output file holding them
//!   was flushed to disk (`H5Fflush`, then `fdatasync`).
//!
//! A different fingerprint (changed expression, modified input, other version) means
//! the journal is stale: it is discarded with its temporary files and the run starts
//! fresh. A torn last record (the process died mid-append) is cut off.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::exec::plan::Plan;

const MAGIC: &[u8] = b"DROVER-JOURNAL 1\n";
pub(crate) const PARTIAL: u8 = 1;
pub(crate) const BLOCKS: u8 = 2;

/// Results recovered from an earlier run.
#[derive(Debug, Default)]
pub struct Recovered {
    pub partials: Vec<(u32, Vec<u8>)>,
    pub blocks: Vec<u32>,
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        self.partials.is_empty() && self.blocks.is_empty()
    }

    pub fn tasks(&self) -> Vec<u32> {
        self.partials.iter().map(|(t, _)| *t).chain(self.blocks.iter().copied()).collect()
    }
}

pub struct Journal {
    path: PathBuf,
    /// Records are buffered; `blocks` (called after each flush of the outputs) and
    /// `flush` push them to the file. A crash loses at most the last buffered partials,
    /// which are then simply computed again.
    file: std::io::BufWriter<File>,
    header_len: u64,
}

/// The journal's path for a plan: beside its first output.
pub fn path_for(plan: &Plan) -> PathBuf {
    let out = &plan.outputs[0].file;
    out.with_file_name(format!(".{}.drover-journal", crate::exec::staging::file_name(out)))
}

/// What identifies a run: same fingerprint, same results.
pub fn fingerprint(plan: &Plan) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(serde_json::to_vec(plan).expect("plans serialize"));
    // A staging copy is written by the run itself.
    for inp in plan.inputs.iter().filter(|i| i.staged.is_none()) {
        h.update(inp.file.display().to_string().as_bytes());
        if let Ok(m) = std::fs::metadata(&inp.file) {
            h.update(m.len().to_le_bytes());
            if let Ok(t) = m.modified()
                && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
            {
                h.update(d.as_nanos().to_le_bytes());
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One record: kind, task, payload length and payload, then a CRC of them all.
pub(crate) fn record(kind: u8, task: u32, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(17 + payload.len());
    r.push(kind);
    r.extend_from_slice(&task.to_le_bytes());
    r.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    r.extend_from_slice(payload);
    let crc = crc32fast::hash(&r);
    r.extend_from_slice(&crc.to_le_bytes());
    r
}

/// Parse records (the bytes after the header); returns what was read and the length
/// of the valid prefix.
pub fn parse(bytes: &[u8]) -> (Recovered, usize) {
    let mut rec = Recovered::default();
    let mut off = 0;
    while off + 13 <= bytes.len() {
        let kind = bytes[off];
        let task = u32::from_le_bytes(bytes[off + 1..off + 5].try_into().expect("4 bytes"));
        let len = u64::from_le_bytes(bytes[off + 5..off + 13].try_into().expect("8 bytes")) as usize;
        // The payload and its checksum must fit in what is left (a corrupted length
        // may be anything: no sum of it may overflow).
        let room = bytes.len() - (off + 13);
        if room < 4 || len > room - 4 {
            break;
        }
        let end = off + 13 + len;
        let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[off..end]) != crc {
            break;
        }
        let payload = &bytes[off + 13..end];
        match kind {
            PARTIAL => rec.partials.push((task, payload.to_vec())),
            BLOCKS => rec
                .blocks
                .extend(payload.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))),
            _ => break,
        }
        off = end + 4;
    }
    (rec, off)
}

impl Journal {
    /// Open the journal of `plan`: resume from it when its fingerprint matches, else
    /// start a new one. `stale` is called when an old journal is discarded.
    pub fn open(plan: &Plan, stale: impl FnOnce()) -> std::io::Result<(Journal, Recovered)> {
        let path = path_for(plan);
        let fp = fingerprint(plan);
        let header = [MAGIC, fp.as_bytes(), b"\n"].concat();
        if let Ok(mut f) = File::open(&path) {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            if bytes.starts_with(&header) {
                let (rec, valid) = parse(&bytes[header.len()..]);
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len((header.len() + valid) as u64)?;
                let mut j = Journal {
                    path,
                    file: std::io::BufWriter::with_capacity(1 << 20, file),
                    header_len: header.len() as u64,
                };
                j.seek_end()?;
                return Ok((j, rec));
            }
            stale();
        }
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        file.write_all(&header)?;
        file.sync_data()?;
        Ok((
            Journal {
                path,
                file: std::io::BufWriter::with_capacity(1 << 20, file),
                header_len: header.len() as u64,
            },
            Recovered::default(),
        ))
    }

    /// Forget every record (keep the header).
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().set_len(self.header_len)?;
        self.seek_end()
    }

    fn seek_end(&mut self) -> std::io::Result<()> {
        use std::io::Seek;
        self.file.seek(std::io::SeekFrom::End(0)).map(|_| ())
    }

    /// Push buffered records to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    pub fn partial(&mut self, task: u32, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(&record(PARTIAL, task, bytes))
    }

    /// Blocks now durable in the (flushed) temporary output.
    pub fn blocks(&mut self, tasks: &[u32]) -> std::io::Result<()> {
        let payload: Vec<u8> = tasks.iter().flat_map(|t| t.to_le_bytes()).collect();
        self.file.write_all(&record(BLOCKS, 0, &payload))?;
        self.file.flush()?;
        self.file.get_ref().sync_data()
    }

    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_tails_are_cut() {
        let mut bytes = record(PARTIAL, 7, &[1, 2, 3]);
        bytes.extend(record(BLOCKS, 0, &[5u32.to_le_bytes(), 9u32.to_le_bytes()].concat()));
        let whole = bytes.len();
        bytes.extend(&record(PARTIAL, 8, &[4; 100])[..50]);
        let (rec, valid) = parse(&bytes);
        assert_eq!(valid, whole);
        assert_eq!(rec.partials, vec![(7, vec![1, 2, 3])]);
        assert_eq!(rec.blocks, vec![5, 9]);
        let mut bad = record(PARTIAL, 1, &[1]);
        bad[14] ^= 0xff;
        assert_eq!(parse(&bad).1, 0, "a bad checksum ends the valid prefix");
        // Found by fuzzing: a length near usize::MAX overflowed the bounds check.
        let mut huge = vec![PARTIAL, 0, 0, 0, 0];
        huge.extend_from_slice(&(u64::MAX - 2).to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(parse(&huge).1, 0, "a record longer than the file ends the valid prefix");
    }
}
