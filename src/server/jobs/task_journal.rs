//! A task job's journal, `SRV/jobs/JOB/journal`: the request as submitted, then one
//! fixed-size record per task that ended (and one when the job was cancelled). A
//! server started again on the same folder reads every journal back: finished jobs
//! are listed as they ended, unfinished ones resume with only their tasks that had
//! not ended. Records are appended as tasks end and flushed after each batch of
//! events; a torn last record (the server died mid-write) is cut off, and that task
//! simply runs again.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::proto::jobs::{End, TaskJobRequest};

const MAGIC: &[u8] = b"DROVER-TASKJOB 1\n";
/// task u32, kind u8, value i32, millis u32, requeues u8.
const RECORD: usize = 14;
const JOB_CANCELLED: u32 = u32::MAX;

/// How a task ended, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    pub task: u32,
    /// `None`: cancelled before it ran.
    pub end: Option<End>,
    pub millis: u32,
    pub requeues: u8,
}

/// A journal read back.
#[derive(Debug)]
pub struct Loaded {
    pub id: u64,
    pub request: TaskJobRequest,
    pub ended: Vec<Ended>,
    pub cancelled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a task job journal of this drover version")]
    Format { path: PathBuf },
}

pub struct TaskJournal {
    path: PathBuf,
    file: BufWriter<File>,
    dirty: bool,
}

/// Where job `id`'s journal lives in server folder `dir`.
pub fn path_for(dir: &Path, id: u64) -> PathBuf {
    dir.join("jobs").join(id.to_string()).join("journal")
}

fn encode(e: &Ended) -> [u8; RECORD] {
    let (kind, value) = match e.end {
        None => (0u8, 0i32),
        Some(End::Exited(c)) => (1, c),
        Some(End::Signalled(s)) => (2, s),
        Some(End::TimedOut) => (3, 0),
        Some(End::Cancelled) => (4, 0),
    };
    let mut r = [0u8; RECORD];
    r[..4].copy_from_slice(&e.task.to_le_bytes());
    r[4] = kind;
    r[5..9].copy_from_slice(&value.to_le_bytes());
    r[9..13].copy_from_slice(&e.millis.to_le_bytes());
    r[13] = e.requeues;
    r
}

fn decode(r: &[u8]) -> Option<Ended> {
    let task = u32::from_le_bytes(r[..4].try_into().ok()?);
    let value = i32::from_le_bytes(r[5..9].try_into().ok()?);
    let end = match r[4] {
        0 => None,
        1 => Some(End::Exited(value)),
        2 => Some(End::Signalled(value)),
        3 => Some(End::TimedOut),
        4 => Some(End::Cancelled),
        _ => return None,
    };
    Some(Ended {
        task,
        end,
        millis: u32::from_le_bytes(r[9..13].try_into().ok()?),
        requeues: r[13],
    })
}

impl TaskJournal {
    /// A new journal for job `id`, its header durable before the job is accepted.
    pub fn create(dir: &Path, id: u64, request: &TaskJobRequest) -> Result<Self, JournalError> {
        let path = path_for(dir, id);
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().expect("a parent")).map_err(io)?;
        let body = postcard::to_stdvec(&(id, request)).map_err(|e| io(std::io::Error::other(e)))?;
        let mut f = File::create(&path).map_err(io)?;
        f.write_all(MAGIC).map_err(io)?;
        f.write_all(&(body.len() as u64).to_le_bytes()).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_data().map_err(io)?;
        Ok(Self {
            path,
            file: BufWriter::new(f),
            dirty: false,
        })
    }

    /// Read a journal back, and open it to append to.
    pub fn load(path: &Path) -> Result<(Loaded, Self), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let format = || JournalError::Format { path: path.to_path_buf() };
        let mut bytes = Vec::new();
        File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io)?;
        let rest = bytes.strip_prefix(MAGIC).ok_or_else(format)?;
        let len = u64::from_le_bytes(rest.get(..8).ok_or_else(format)?.try_into().expect("8 bytes")) as usize;
        let body = rest.get(8..8 + len).ok_or_else(format)?;
        let (id, request): (u64, TaskJobRequest) = postcard::from_bytes(body).map_err(|_| format())?;
        let records = &rest[8 + len..];
        let whole = records.len() / RECORD * RECORD;
        let mut ended = Vec::new();
        let mut cancelled = false;
        for r in records[..whole].chunks_exact(RECORD) {
            match decode(r) {
                Some(e) if e.task == JOB_CANCELLED => cancelled = true,
                Some(e) => ended.push(e),
                None => return Err(format()),
            }
        }
        let keep = (MAGIC.len() + 8 + len + whole) as u64;
        let f = OpenOptions::new().write(true).open(path).map_err(io)?;
        // Cut a torn last record, then append after the whole ones.
        f.set_len(keep).map_err(io)?;
        let mut file = BufWriter::new(f);
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(keep)).map_err(io)?;
        Ok((
            Loaded {
                id,
                request,
                ended,
                cancelled,
            },
            Self {
                path: path.to_path_buf(),
                file,
                dirty: false,
            },
        ))
    }

    pub fn record(&mut self, e: &Ended) {
        if let Err(err) = self.file.write_all(&encode(e)) {
            tracing::warn!(journal = %self.path.display(), error = %err, "cannot record a task's end");
        }
        self.dirty = true;
    }

    pub fn job_cancelled(&mut self) {
        self.record(&Ended {
            task: JOB_CANCELLED,
            end: None,
            millis: 0,
            requeues: 0,
        });
    }

    /// Push buffered records to the file (the page cache: a server killed keeps them).
    pub fn flush(&mut self) {
        if std::mem::take(&mut self.dirty)
            && let Err(err) = self.file.flush()
        {
            tracing::warn!(journal = %self.path.display(), error = %err, "cannot write the job's journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> TaskJobRequest {
        TaskJobRequest {
            name: Some("n".into()),
            priority: 0,
            max_retries: 0,
            after: vec![],
            groups: vec![crate::proto::jobs::GroupRequest {
                name: String::new(),
                argv: vec!["true".into()],
                env: vec![],
                cwd: "/".into(),
                stdout: crate::proto::jobs::Log::Discard,
                stderr: crate::proto::jobs::Log::Default,
                array: Some("1-10".into()),
                entries: None,
                time_limit: None,
                cores: 1,
                after: vec![],
            }],
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("drover-tj-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut j = TaskJournal::create(&dir, 7, &request()).unwrap();
        let a = Ended {
            task: 3,
            end: Some(End::Exited(0)),
            millis: 12,
            requeues: 1,
        };
        let b = Ended {
            task: 4,
            end: Some(End::Signalled(9)),
            millis: 5,
            requeues: 0,
        };
        let c = Ended {
            task: 5,
            end: None,
            millis: 0,
            requeues: 0,
        };
        for e in [&a, &b, &c] {
            j.record(e);
        }
        j.job_cancelled();
        j.flush();
        drop(j);
        let path = path_for(&dir, 7);
        // A torn record at the end: 5 of its 14 bytes.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[1, 2, 3, 4, 5])
            .unwrap();
        let (l, mut j) = TaskJournal::load(&path).unwrap();
        assert_eq!((l.id, l.request.groups[0].array.as_deref(), l.cancelled), (7, Some("1-10"), true));
        assert_eq!(l.ended, vec![a, b, c]);
        // Appending after the cut keeps the file whole.
        let d = Ended {
            task: 6,
            end: Some(End::TimedOut),
            millis: 9,
            requeues: 0,
        };
        j.record(&d);
        j.flush();
        drop(j);
        let (l, _) = TaskJournal::load(&path).unwrap();
        assert_eq!(l.ended, vec![a, b, c, d]);
        std::fs::write(&path, b"not a journal").unwrap();
        assert!(matches!(TaskJournal::load(&path), Err(JournalError::Format { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
