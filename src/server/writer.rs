//! The single writer of a job's output files, on its own thread, and keeper of the
//! run journal.
//!
//! Outputs are written into a temporary file beside each final file
//! (`.NAME.drover-tmp`) and renamed over the final name only when the whole job
//! succeeded, so an output file appears only when complete. Written blocks are
//! recorded in the journal after the temporary file was flushed; reduction partials
//! are recorded as they come. On failure the temporary files and the journal are
//! removed, unless the file system refused a write (full, over quota, read-only, an
//! I/O error): then, as when a client abandons its run, both stay and the same
//! command resumes once the fault is gone.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::journal::Journal;
use crate::config::workload::OutDtype;
use crate::exec::hdf;
use crate::exec::plan::Plan;

enum Cmd {
    /// One task's block of each output it computes.
    Write {
        parts: Vec<(u32, Bytes)>,
        region: Vec<Range<usize>>,
        task: u32,
    },
    Partial {
        task: u32,
        bytes: Bytes,
    },
    /// A block a worker wrote into the file itself.
    Written {
        task: u32,
    },
    /// Make a staging copy durable and close its file, so that workers may open it.
    Settle {
        output: u32,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    Finish(tokio::sync::oneshot::Sender<Result<(), WriteFailure>>),
    Abandon,
}

/// Handle to the writer thread.
pub struct Writer {
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    /// Write errors are reported here as they happen.
    pub errors: tokio::sync::mpsc::UnboundedReceiver<WriteFailure>,
    /// Per output: where workers on this host may write blocks themselves.
    pub direct: Vec<Option<crate::proto::DirectOutput>>,
    busy: Busy,
}

/// The time the writer thread has spent working (writing blocks and partials,
/// flushing, closing), as opposed to waiting for work: close to a run's whole time,
/// the writer bounded the run. Readable while the writer works and after it ended.
#[derive(Clone, Default)]
pub struct Busy(Arc<AtomicU64>);

impl Busy {
    pub fn seconds(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1e6
    }

    fn add(&self, since: Instant) {
        self.0.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// A write of an output or of the journal that failed.
#[derive(Debug)]
pub struct WriteFailure {
    /// One line naming the file and the error.
    pub message: String,
    /// The file system refused the write (full, over quota, read-only, no permission,
    /// an I/O error): what was made durable stays with the journal, so that the same
    /// command resumes once the fault is gone.
    pub resumable: bool,
}

impl WriteFailure {
    /// `what` (e.g. `writing "FILE"`) failed with `err`.
    fn io(what: String, err: &std::io::Error) -> Self {
        use nix::errno::Errno;
        let resumable = err.raw_os_error().is_some_and(|n| {
            [
                Errno::ENOSPC,
                Errno::EDQUOT,
                Errno::EROFS,
                Errno::EACCES,
                Errno::EPERM,
                Errno::EIO,
                Errno::EFBIG,
            ]
            .contains(&Errno::from_raw(n))
        });
        let message = if resumable {
            format!("{what}: {err}; free space (or make it writable) and run the same command again: it resumes from what was written")
        } else {
            format!("{what}: {err}")
        };
        Self { message, resumable }
    }

    /// `what` failed in the HDF5 library: resumable when the library's own write or
    /// flush failed with an OS error (its error stack carries the errno).
    fn hdf(what: String, err: &hdf5::Error) -> Self {
        match os_error(err) {
            Some(os) => Self::io(what, &os),
            None => Self {
                message: format!("{what}: {err}"),
                resumable: false,
            },
        }
    }

    /// Writing (or flushing, closing) the temporary output `temp` failed.
    fn temp(temp: &Path, err: &hdf5::Error) -> Self {
        Self::hdf(format!("cannot write \"{}\"", temp.display()), err)
    }

    fn other(message: String) -> Self {
        Self { message, resumable: false }
    }
}

/// The OS error under an HDF5 error: its file driver records `errno = N` in the
/// innermost frame of a failed read, write or flush.
fn os_error(err: &hdf5::Error) -> Option<std::io::Error> {
    err.stack()?.iter().rev().find_map(|frame| {
        let desc = frame.desc();
        let at = desc.find("errno = ")? + "errno = ".len();
        let digits: String = desc[at..].chars().take_while(char::is_ascii_digit).collect();
        Some(std::io::Error::from_raw_os_error(digits.parse().ok()?))
    })
}

/// Whether workers may write output `output`'s blocks into `temp` themselves, and
/// where: every chunk allocated and stored raw (the datasets are created so), every
/// block of the stage writing it made of whole chunks (no chunk is shared by two
/// workers), native little-endian values (what workers encode).
/// `DROVER_DIRECT_WRITES=0` turns this off: every block then comes to this writer.
fn direct_output(plan: &Plan, output: u32, ds: &hdf5::Dataset, temp: &Path) -> Option<crate::proto::DirectOutput> {
    use std::os::unix::fs::MetadataExt;
    if std::env::var_os("DROVER_DIRECT_WRITES").is_some_and(|v| v == "0") || cfg!(target_endian = "big") {
        return None;
    }
    let out = &plan.outputs[output as usize];
    let chunk = ds.chunk()?;
    let st = plan.stages.iter().find(|st| st.outputs().contains(&output))?;
    let whole_chunks = st
        .block
        .iter()
        .zip(&chunk)
        .zip(&st.shape)
        .all(|((&b, &c), &n)| b % c == 0 || b >= n);
    if st.local || !whole_chunks || chunk.len() != st.shape.len() {
        return None;
    }
    let addrs = hdf::chunk_table(ds, out.dtype.size())?;
    let meta = std::fs::metadata(temp).ok()?;
    Some(crate::proto::DirectOutput {
        path: std::path::absolute(temp).ok()?,
        dev: meta.dev(),
        ino: meta.ino(),
        chunk,
        addrs,
    })
}

pub use crate::exec::staging::temp_name;

/// Distinct output files of a plan, in order.
pub fn output_files(plan: &Plan) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    for o in &plan.outputs {
        if !v.contains(&o.file) {
            v.push(o.file.clone());
        }
    }
    v
}

struct OutFile {
    temp: PathBuf,
    final_path: PathBuf,
    file: Option<hdf5::File>,
    /// A staging copy: removed at the end, not renamed.
    staging: bool,
    /// The temporary file opened again, to start the writeback of its pages
    /// ([`WriterThread::start_writeback`]) and to sync them before the journal records
    /// blocks ([`WriterThread::make_durable`]); `None` if it could not be opened.
    pages: Option<std::fs::File>,
}

/// How often written blocks are made durable (flush + journal record).
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Bytes of blocks written by the writer after which it starts their writeback
/// ([`WriterThread::start_writeback`]), besides every [`FLUSH_EVERY`].
const WRITEBACK_EVERY: usize = 16 << 20;

impl Writer {
    /// Create the temporary files and datasets of every output, or reopen them when
    /// `reopen` (resuming a journaled run).
    pub fn start(plan: &Plan, reopen: bool, journal: Journal) -> Result<Self, String> {
        let mut files: Vec<OutFile> = Vec::new();
        let mut datasets = Vec::new();
        let fail = |files: &mut Vec<OutFile>, datasets: &mut Vec<Option<hdf5::Dataset>>, msg: String| {
            datasets.clear();
            for f in files.iter_mut() {
                f.file.take();
                let _ = std::fs::remove_file(&f.temp);
            }
            msg
        };
        for path in output_files(plan) {
            let temp = temp_name(&path);
            let opened = if reopen {
                hdf5::File::open_rw(&temp)
            } else {
                hdf5::File::create(&temp)
            };
            match opened {
                Ok(f) => files.push(OutFile {
                    file: Some({
                        if !hdf::close_on_exec(&f) {
                            tracing::debug!(file = %temp.display(), "cannot mark the output's descriptor close-on-exec");
                        }
                        f
                    }),
                    staging: plan.outputs.iter().any(|o| o.file == path && o.staging.is_some()),
                    pages: std::fs::File::open(&temp).ok(),
                    temp,
                    final_path: path,
                }),
                Err(e) => {
                    let msg = format!(
                        "cannot {} output file \"{}\": {e}",
                        if reopen { "reopen" } else { "create" },
                        temp.display()
                    );
                    return Err(fail(&mut files, &mut datasets, msg));
                }
            }
        }
        for out in &plan.outputs {
            let f = files
                .iter()
                .find(|f| f.final_path == out.file)
                .and_then(|f| f.file.as_ref())
                .expect("opened above");
            let ds = if reopen {
                f.dataset(&out.dataset)
            } else {
                hdf::create_output(f, &out.dataset, &out.shape, out.chunk.as_deref(), out.dtype, out.compression)
            };
            match ds {
                Ok(ds) => datasets.push(Some(ds)),
                Err(e) => {
                    let msg = format!("cannot prepare dataset \"{}\" in \"{}\": {e}", out.dataset, out.file.display());
                    return Err(fail(&mut files, &mut datasets, msg));
                }
            }
        }
        if !reopen {
            // Named dimensions, coordinates and attributes, per file, before any block.
            let labelled = files.iter().filter(|f| !f.staging).try_for_each(|f| {
                let of_file: Vec<(&hdf5::Dataset, &str, &hdf::dims::Labels, bool)> = plan
                    .outputs
                    .iter()
                    .zip(&datasets)
                    .filter_map(|(o, ds)| Some((o, ds.as_ref()?)))
                    .filter(|(o, _)| o.file == f.final_path)
                    .map(|(o, ds)| (ds, o.dataset.as_str(), &o.labels, matches!(o.dtype, OutDtype::F32 | OutDtype::F64)))
                    .collect();
                let file = f.file.as_ref().expect("opened above");
                hdf::dims::write_labels(file, &of_file)
                    .map_err(|e| format!("cannot label the outputs in \"{}\": {e}", f.final_path.display()))
            });
            if let Err(msg) = labelled {
                return Err(fail(&mut files, &mut datasets, msg));
            }
        }
        let dtypes: Vec<OutDtype> = plan.outputs.iter().map(|o| o.dtype).collect();
        let compressed: Vec<Option<Vec<usize>>> = plan.outputs.iter().map(|o| o.compression.and(o.chunk.clone())).collect();
        let direct = plan
            .outputs
            .iter()
            .enumerate()
            .zip(&datasets)
            .map(|((i, out), ds)| {
                let temp = &files.iter().find(|f| f.final_path == out.file).expect("opened above").temp;
                direct_output(plan, i as u32, ds.as_ref()?, temp)
            })
            .collect();
        let file_of = plan
            .outputs
            .iter()
            .map(|o| files.iter().position(|f| f.final_path == o.file).expect("opened above"))
            .collect();
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (etx, errors) = tokio::sync::mpsc::unbounded_channel();
        let busy = Busy::default();
        let thread_busy = busy.clone();
        let thread = std::thread::Builder::new()
            .name("drover-writer".into())
            .spawn(move || {
                WriterThread {
                    files,
                    file_of,
                    datasets,
                    dtypes,
                    compressed,
                    journal: Some(journal),
                    errors: etx,
                    failed: None,
                    busy: thread_busy,
                }
                .run(rx)
            })
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            errors,
            direct,
            busy,
        })
    }

    /// The writer thread's working time, also after [`Writer::finish`].
    pub fn busy(&self) -> Busy {
        self.busy.clone()
    }

    fn send(&self, cmd: Cmd) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(cmd);
        }
    }

    /// Write a block of each of these outputs (one task's), then record the task.
    pub fn write(&self, parts: Vec<(u32, Bytes)>, region: Vec<Range<usize>>, task: u32) {
        self.send(Cmd::Write { parts, region, task });
    }

    /// Record a reduction partial in the journal.
    pub fn partial(&self, task: u32, bytes: Bytes) {
        self.send(Cmd::Partial { task, bytes });
    }

    /// Record a block a worker wrote into the file itself.
    pub fn written(&self, task: u32) {
        self.send(Cmd::Written { task });
    }

    /// Once every block written before is durable, close the staging copy `output`
    /// (its workers' readers open it next).
    pub fn settle(&self, output: u32) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Cmd::Settle { output, reply });
        rx
    }

    /// Close the files, rename them to their final names, remove the journal.
    pub fn finish(mut self) -> tokio::sync::oneshot::Receiver<Result<(), WriteFailure>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Cmd::Finish(tx));
        self.tx.take();
        self.thread.take();
        rx
    }

    /// Stop writing but keep the temporary files and the journal, so that running
    /// the same workload again resumes.
    pub fn abandon(mut self) {
        self.send(Cmd::Abandon);
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    /// Dropping a writer that was neither finished nor abandoned aborts: temporary
    /// files and the journal are removed.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct WriterThread {
    files: Vec<OutFile>,
    /// Each output's file (index into `files`).
    file_of: Vec<usize>,
    /// Each output's dataset, until its file is closed.
    datasets: Vec<Option<hdf5::Dataset>>,
    dtypes: Vec<OutDtype>,
    /// The chunk shape of each compressed output (its blocks come as compressed chunks).
    compressed: Vec<Option<Vec<usize>>>,
    journal: Option<Journal>,
    errors: tokio::sync::mpsc::UnboundedSender<WriteFailure>,
    /// The first failure, once there was one.
    failed: Option<bool>,
    busy: Busy,
}

impl WriterThread {
    fn report(&mut self, e: WriteFailure) {
        if self.failed.is_none() {
            self.failed = Some(e.resumable);
            let _ = self.errors.send(e);
        }
    }

    fn journal_failure(j: &Journal, e: &std::io::Error) -> WriteFailure {
        WriteFailure::io(format!("cannot write the journal \"{}\"", j.path().display()), e)
    }

    /// Flush the temporary files down to the disk, then record the blocks they now
    /// hold. `H5Fflush` takes HDF5's buffers only as far as the kernel: without the
    /// `fdatasync` a crash of this machine (not only of drover) could leave a journal
    /// that names blocks the disk never got, and the resumed run would skip them. The
    /// writeback started as blocks landed leaves it little to wait for.
    fn make_durable(&mut self, pending: &mut Vec<u32>) {
        if pending.is_empty() || self.failed.is_some() {
            return;
        }
        for f in &self.files {
            let Some(file) = &f.file else { continue };
            if let Err(e) = file.flush() {
                let failure = WriteFailure::temp(&f.temp, &e);
                self.report(failure);
                return;
            }
            if let Some(Err(e)) = f.pages.as_ref().map(std::fs::File::sync_data) {
                let failure = WriteFailure::io(format!("cannot flush \"{}\" to disk", f.temp.display()), &e);
                self.report(failure);
                return;
            }
        }
        if let Some(j) = &mut self.journal
            && let Err(e) = j.blocks(pending)
        {
            let failure = Self::journal_failure(j, &e);
            self.report(failure);
            return;
        }
        pending.clear();
    }

    /// Make the pending blocks durable and the journal's records (partials too) reach
    /// the file.
    fn sync(&mut self, pending: &mut Vec<u32>) {
        self.make_durable(pending);
        if let Some(j) = &mut self.journal
            && self.failed.is_none()
            && let Err(e) = j.flush()
        {
            let failure = Self::journal_failure(j, &e);
            self.report(failure);
        }
    }

    /// Start the kernel writing the outputs' dirty pages (the writer's and those the
    /// workers wrote into the same files) to disk, without waiting for it. Left until
    /// the end, they pile up: many GiB of them throttle every writer, and on ext4 the
    /// rename that replaces an existing output writes them all back first
    /// (`auto_da_alloc`): 0.34 s at the end of a run with a 500 MB output, measured
    /// here, 0.10 s now (freeing the replaced file's blocks). A hint only: a file
    /// system without it loses nothing.
    fn start_writeback(&self) {
        use std::os::fd::AsRawFd;
        for f in self.files.iter().filter(|f| !f.staging) {
            if let Some(pages) = &f.pages {
                // SAFETY: a descriptor open as long as `pages`; no memory is passed.
                unsafe { nix::libc::sync_file_range(pages.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE) };
            }
        }
    }

    fn close_files(&mut self) -> Result<(), WriteFailure> {
        self.datasets.clear();
        let mut result = Ok(());
        for f in &mut self.files {
            if let Some(file) = f.file.take()
                && let Err(e) = file.close()
            {
                result = Err(WriteFailure::temp(&f.temp, &e));
            }
        }
        result
    }

    fn remove_all(&mut self) {
        self.datasets.clear();
        for f in &mut self.files {
            f.file.take();
            let _ = std::fs::remove_file(&f.temp);
        }
        if let Some(j) = self.journal.take() {
            j.remove();
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut pending: Vec<u32> = Vec::new();
        let mut last_flush = Instant::now();
        let mut unflushed = 0usize;
        loop {
            let cmd = match rx.recv_timeout(FLUSH_EVERY) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Dropped without finishing: abort.
                    self.remove_all();
                    return;
                }
            };
            let working = Instant::now();
            match cmd {
                None => {}
                Some(Cmd::Write { parts, region, task }) if self.failed.is_none() => {
                    let sent: usize = parts.iter().map(|(_, b)| b.len()).sum();
                    let mut ok = true;
                    for (output, bytes) in parts {
                        let Some(ds) = &self.datasets[output as usize] else {
                            self.report(WriteFailure::other(format!("writing output {output}: its file was already closed")));
                            ok = false;
                            break;
                        };
                        let written = match &self.compressed[output as usize] {
                            Some(chunk) => hdf::write_chunks(ds, &region, chunk, &bytes),
                            None => hdf::write_region(ds, &region, self.dtypes[output as usize], &bytes),
                        };
                        if let Err(e) = written {
                            let temp = &self.files[self.file_of[output as usize]].temp;
                            self.report(WriteFailure::temp(temp, &e));
                            ok = false;
                            break;
                        }
                    }
                    // Recorded only once every output of the task holds its block.
                    if ok {
                        pending.push(task);
                    }
                    // Writeback started every few blocks, not only every second: what
                    // is still dirty at the end is what the rename may wait for.
                    unflushed += sent;
                    if unflushed >= WRITEBACK_EVERY {
                        self.start_writeback();
                        unflushed = 0;
                    }
                }
                Some(Cmd::Write { .. }) => {}
                Some(Cmd::Written { task }) => pending.push(task),
                Some(Cmd::Partial { task, bytes }) => {
                    if let Some(j) = &mut self.journal
                        && self.failed.is_none()
                        && let Err(e) = j.partial(task, &bytes)
                    {
                        let failure = Self::journal_failure(j, &e);
                        self.report(failure);
                    }
                }
                Some(Cmd::Settle { output, reply }) => {
                    self.sync(&mut pending);
                    let result = if self.failed.is_some() {
                        Err("an earlier write failed".into())
                    } else {
                        self.datasets[output as usize] = None;
                        let f = &mut self.files[self.file_of[output as usize]];
                        match f.file.take().map(hdf5::File::close) {
                            Some(Err(e)) => Err(format!("closing \"{}\": {e}", f.temp.display())),
                            _ => Ok(()),
                        }
                    };
                    let _ = reply.send(result);
                }
                Some(Cmd::Finish(reply)) => {
                    let mut result = self.close_files();
                    if let (Some(resumable), Ok(())) = (self.failed, &result) {
                        result = Err(WriteFailure {
                            message: "an earlier write failed".into(),
                            resumable,
                        });
                    }
                    if result.is_ok() {
                        for f in &self.files {
                            if f.staging {
                                let _ = std::fs::remove_file(&f.temp);
                                continue;
                            }
                            if let Err(e) = std::fs::rename(&f.temp, &f.final_path) {
                                let what = format!("cannot rename \"{}\" to \"{}\"", f.temp.display(), f.final_path.display());
                                result = Err(WriteFailure::io(what, &e));
                                // The closed files hold every block: record those not yet
                                // journaled, so that the resume has nothing to redo.
                                if let Some(j) = &mut self.journal {
                                    let _ = j.blocks(&pending);
                                }
                                break;
                            }
                        }
                    }
                    match &result {
                        Ok(()) => {
                            if let Some(j) = self.journal.take() {
                                j.remove();
                            }
                        }
                        // The journal and the files it speaks of stay for the resume.
                        Err(f) if f.resumable => {}
                        Err(_) => self.remove_all(),
                    }
                    self.busy.add(working);
                    let _ = reply.send(result);
                    return;
                }
                Some(Cmd::Abandon) => {
                    self.sync(&mut pending);
                    let _ = self.close_files();
                    return;
                }
            }
            if last_flush.elapsed() >= FLUSH_EVERY || pending.len() >= 256 {
                self.sync(&mut pending);
                self.start_writeback();
                (last_flush, unflushed) = (Instant::now(), 0);
            }
            self.busy.add(working);
        }
    }
}
