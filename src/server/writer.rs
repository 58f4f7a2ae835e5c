//! The single writer of a job's output files, on its own thread.
//!
//! Outputs are written into a temporary file beside each final file
//! (`.NAME.drover-PID-JOB.tmp`) and renamed over the final name only when the whole job
//! succeeded, so an output file appears only when complete. On failure the temporary
//! files are removed.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use ndarray::ArrayD;

use crate::exec::hdf;
use crate::exec::plan::Plan;

enum Cmd {
    Write {
        output: u32,
        region: Vec<Range<usize>>,
        bytes: Bytes,
    },
    WriteArray {
        output: u32,
        array: ArrayD<f64>,
    },
    Finish(tokio::sync::oneshot::Sender<Result<(), String>>),
}

/// Handle to the writer thread.
pub struct Writer {
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    /// Write errors are reported here as they happen.
    pub errors: tokio::sync::mpsc::UnboundedReceiver<String>,
    temps: Vec<PathBuf>,
}

fn temp_name(file: &Path, job: u64) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    file.with_file_name(format!(".{name}.drover-{}-{job}.tmp", std::process::id()))
}

struct OutFile {
    temp: PathBuf,
    final_path: PathBuf,
    file: Option<hdf5::File>,
}

impl Writer {
    /// Create the temporary files and datasets of every output of the plan.
    pub fn start(plan: &Plan, job: u64) -> Result<Self, String> {
        let mut files: Vec<OutFile> = Vec::new();
        let mut datasets = Vec::new();
        let cleanup = |files: &[OutFile]| {
            for f in files {
                let _ = std::fs::remove_file(&f.temp);
            }
        };
        for out in &plan.outputs {
            let idx = match files.iter().position(|f| f.final_path == out.file) {
                Some(i) => i,
                None => {
                    let temp = temp_name(&out.file, job);
                    match hdf5::File::create(&temp) {
                        Ok(f) => files.push(OutFile {
                            temp,
                            final_path: out.file.clone(),
                            file: Some(f),
                        }),
                        Err(e) => {
                            cleanup(&files);
                            return Err(format!("cannot create output file \"{}\": {e}", temp.display()));
                        }
                    }
                    files.len() - 1
                }
            };
            let file = files[idx].file.as_ref().expect("open");
            match hdf::create_output(file, &out.dataset, &out.shape, out.chunk.as_deref(), out.dtype) {
                Ok(ds) => datasets.push(ds),
                Err(e) => {
                    drop(datasets);
                    for f in &mut files {
                        f.file.take();
                    }
                    cleanup(&files);
                    return Err(format!(
                        "cannot create dataset \"{}\" in \"{}\": {e}",
                        out.dataset,
                        out.file.display()
                    ));
                }
            }
        }
        let temps = files.iter().map(|f| f.temp.clone()).collect();
        let dtypes: Vec<_> = plan.outputs.iter().map(|o| o.dtype).collect();
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (etx, errors) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("drover-writer".into())
            .spawn(move || writer_loop(rx, etx, files, datasets, dtypes))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            errors,
            temps,
        })
    }

    pub fn write(&self, output: u32, region: Vec<Range<usize>>, bytes: Bytes) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Write { output, region, bytes });
        }
    }

    pub fn write_array(&self, output: u32, array: ArrayD<f64>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::WriteArray { output, array });
        }
    }

    /// Close the files and rename them to their final names.
    pub fn finish(mut self) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(cmd) = self.tx.take() {
            let _ = cmd.send(Cmd::Finish(tx));
        }
        self.temps.clear();
        // The thread ends by itself after Finish.
        self.thread.take();
        rx
    }
}

impl Drop for Writer {
    /// Dropping a writer that was not finished aborts: temporary files are removed.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for t in &self.temps {
            let _ = std::fs::remove_file(t);
        }
    }
}

fn writer_loop(
    rx: mpsc::Receiver<Cmd>,
    errors: tokio::sync::mpsc::UnboundedSender<String>,
    mut files: Vec<OutFile>,
    datasets: Vec<hdf5::Dataset>,
    dtypes: Vec<crate::config::workload::OutDtype>,
) {
    let mut failed = false;
    let mut datasets: HashMap<u32, hdf5::Dataset> = datasets.into_iter().enumerate().map(|(i, d)| (i as u32, d)).collect();
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Write { output, region, bytes } => {
                if failed {
                    continue;
                }
                let ds = &datasets[&output];
                if let Err(e) = hdf::write_region(ds, &region, dtypes[output as usize], &bytes) {
                    failed = true;
                    let _ = errors.send(format!("writing output {output}: {e}"));
                }
            }
            Cmd::WriteArray { output, array } => {
                if failed {
                    continue;
                }
                let ds = &datasets[&output];
                let region: Vec<Range<usize>> = array.shape().iter().map(|&n| 0..n).collect();
                let mut buf = Vec::new();
                match dtypes[output as usize] {
                    crate::config::workload::OutDtype::F64 => crate::exec::push_f64(&mut buf, &array),
                    crate::config::workload::OutDtype::F32 => {
                        for v in array.iter() {
                            buf.extend_from_slice(&(*v as f32).to_le_bytes());
                        }
                    }
                }
                if let Err(e) = hdf::write_region(ds, &region, dtypes[output as usize], &buf) {
                    failed = true;
                    let _ = errors.send(format!("writing output {output}: {e}"));
                }
            }
            Cmd::Finish(reply) => {
                datasets.clear();
                let mut result = Ok(());
                for f in &mut files {
                    if let Some(file) = f.file.take()
                        && let Err(e) = file.close()
                    {
                        result = Err(format!("closing \"{}\": {e}", f.temp.display()));
                    }
                }
                if failed && result.is_ok() {
                    result = Err("an earlier write failed".into());
                }
                if result.is_ok() {
                    for f in &files {
                        if let Err(e) = std::fs::rename(&f.temp, &f.final_path) {
                            result = Err(format!("renaming \"{}\" to \"{}\": {e}", f.temp.display(), f.final_path.display()));
                            break;
                        }
                    }
                }
                if result.is_err() {
                    for f in &files {
                        let _ = std::fs::remove_file(&f.temp);
                    }
                }
                let _ = reply.send(result);
                return;
            }
        }
    }
    // Channel closed without Finish: abort.
    datasets.clear();
    for f in &mut files {
        f.file.take();
        let _ = std::fs::remove_file(&f.temp);
    }
}
