//! Block reads of an input dataset.
//!
//! Where the file can be mapped (no user block; contiguous or chunked layout), it is
//! mapped read-only and regions are read from the mapped bytes without the HDF5
//! library and its global lock:
//! - contiguous data and unfiltered chunks are converted from the stored bytes;
//! - filtered chunks are decoded by drover ([`super::filters`]) in the calling thread.
//!
//! Chunk addresses come from the dataset's chunk index, read once ([`ChunkIndex`]).
//! A chunk read whole is decoded straight into a per-thread buffer; a chunk read in
//! parts (pieces smaller than a chunk, blocks that cut chunks) is decoded once into a
//! bounded cache shared by the process's threads, so no chunk is decoded twice while
//! its parts are being read. Unwritten chunks (the fill value), compact and virtual
//! layouts, and filters drover does not decode go through the HDF5 library.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{ArrayD, IxDyn};

use super::fault;
use super::filters::{Decoding, Pipeline};
use super::index::ChunkIndex;
use super::{Dtype, convert, copy_logical, decoding_of, for_each_cell, read_region, scatter};
use crate::exec::buffers::BufPool;
use crate::exec::geometry::for_each_row;

/// An opened input dataset, ready for block reads.
pub struct Reader {
    ds: hdf5::Dataset,
    chunk: Option<Vec<usize>>,
    mapped: Option<Mapped>,
    /// Who decodes filtered chunks: "drover", "hdf5" or "none" (for logs and tests).
    decoder: &'static str,
    /// The file as it was when opened, to notice it being changed under a run.
    stamp: Stamp,
}

/// An open input file with its size and modification time when opened.
struct Stamp {
    file: std::fs::File,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let m = file.metadata()?;
        Ok(Self {
            len: m.len(),
            modified: m.modified().ok(),
            file,
        })
    }
}

/// Why what was read of an input cannot be trusted.
#[derive(Debug, Clone, PartialEq)]
pub enum InputFault {
    /// The file changed (size or modification time) since the run opened it.
    Changed(String),
    /// Its file system failed a read.
    Io(String),
}

struct Mapped {
    /// Read faults in the map become zero pages (declared before `map`: fields drop in
    /// order, so the map is unregistered before it is unmapped).
    fault: Option<fault::Guard>,
    map: memmap2::Mmap,
    /// The same file, for positioned reads of compressed chunks.
    file: std::fs::File,
    dtype: Dtype,
    big_endian: bool,
    /// The storage cell's shape (the HDF5 chunk, or the whole dataset when contiguous).
    cell: Vec<usize>,
    shape: Vec<usize>,
    store: Store,
    /// The parts of the map kept mapped into this process.
    resident: Mutex<Resident>,
}

enum Store {
    /// Contiguous at this offset.
    Contiguous(u64),
    /// Chunks stored as plain bytes.
    Raw(ChunkIndex),
    /// Chunks decoded by drover.
    Filtered {
        index: ChunkIndex,
        pipeline: Pipeline,
        cache: ChunkCache,
    },
}

/// Stored values of one storage cell, in their own type.
pub enum Typed<'a> {
    I8(ndarray::ArrayViewD<'a, i8>),
    I16(ndarray::ArrayViewD<'a, i16>),
    I32(ndarray::ArrayViewD<'a, i32>),
    I64(ndarray::ArrayViewD<'a, i64>),
    U8(ndarray::ArrayViewD<'a, u8>),
    U16(ndarray::ArrayViewD<'a, u16>),
    U32(ndarray::ArrayViewD<'a, u32>),
    U64(ndarray::ArrayViewD<'a, u64>),
    F32(ndarray::ArrayViewD<'a, f32>),
    F64(ndarray::ArrayViewD<'a, f64>),
}

/// Apply a generic expression to the view inside a [`Typed`].
#[macro_export]
macro_rules! with_typed {
    ($typed:expr, $v:ident => $body:expr) => {
        match $typed {
            $crate::exec::hdf::reader::Typed::I8($v) => $body,
            $crate::exec::hdf::reader::Typed::I16($v) => $body,
            $crate::exec::hdf::reader::Typed::I32($v) => $body,
            $crate::exec::hdf::reader::Typed::I64($v) => $body,
            $crate::exec::hdf::reader::Typed::U8($v) => $body,
            $crate::exec::hdf::reader::Typed::U16($v) => $body,
            $crate::exec::hdf::reader::Typed::U32($v) => $body,
            $crate::exec::hdf::reader::Typed::U64($v) => $body,
            $crate::exec::hdf::reader::Typed::F32($v) => $body,
            $crate::exec::hdf::reader::Typed::F64($v) => $body,
        }
    };
}

/// Where one storage cell's bytes are.
enum Cell<'a> {
    /// Plain bytes (a raw chunk, or the contiguous data).
    Plain(&'a [u8]),
    /// Decoded bytes of a filtered chunk.
    Decoded(Arc<Vec<u8>>),
    /// Read it through the HDF5 library (unwritten: the fill value).
    Library,
}

/// Bounds how much of a mapped file stays mapped into the process.
///
/// Mapped file pages count in a process's RSS (they are the page cache's, shared and
/// reclaimable, but batch systems and monitors that police RSS cannot tell). Spans are
/// mapped in (prefaulted) when first read and unmapped again, oldest first, beyond a
/// budget: a worker's RSS stays near its own buffers, whatever the size of its inputs.
struct Resident {
    budget: usize,
    bytes: usize,
    order: VecDeque<(u64, usize)>,
    spans: HashSet<u64>,
}

/// Mapped bytes are tracked in windows of this many bytes.
const WINDOW: u64 = 1 << 20;

/// Decoded chunk buffers are reused (chunks of one dataset are all one size).
static DECODED: BufPool = BufPool::new(4);

thread_local! {
    /// Each thread's buffer for a compressed chunk's stored bytes.
    static STORED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Each thread's buffer for chunks read whole (decoded, used, dropped).
    static WHOLE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Reader {
    /// Open `dataset` of `path` for reading.
    pub fn open(path: &Path, dataset: &str) -> hdf5::Result<Self> {
        let stamp = Stamp::of(path).map_err(|e| hdf5::Error::from(e.to_string()))?;
        // Walking the chunk index of a dataset with a million chunks fills the
        // library's metadata cache (32 MiB by default) with index nodes the mapped
        // reads never need again: a small cache keeps workers' memory near their
        // buffers.
        let mut mdc = hdf5::plist::file_access::MetadataCacheConfig::default();
        (mdc.initial_size, mdc.min_size, mdc.max_size) = (1 << 20, 1 << 20, 4 << 20);
        let file = hdf5::File::with_options().with_fapl(|p| p.mdc_config(&mdc)).open(path)?;
        let ds = file.dataset(dataset)?;
        let chunk = ds.chunk();
        let decoding = decoding_of(&ds);
        let mapped = if std::env::var_os("DROVER_DIRECT_READS").is_some_and(|v| v == "0") {
            None
        } else {
            Mapped::open(path, &file, &ds, &decoding)?
        };
        let decoder = match (&decoding, &mapped) {
            (Decoding::None, _) => "none",
            (Decoding::Drover(_), Some(_)) => "drover",
            _ => "hdf5",
        };
        Ok(Self {
            ds,
            chunk,
            mapped,
            decoder,
            stamp,
        })
    }

    /// Whether the file is still as it was when opened (one `fstat`): a file truncated
    /// or rewritten while a run reads it would give wrong results, or a read fault on
    /// its mapped pages. The error says what changed, or that a read of its mapped
    /// pages failed on a file that did not change (an I/O error).
    pub fn unchanged(&self) -> Result<(), InputFault> {
        let s = &self.stamp;
        let m = s
            .file
            .metadata()
            .map_err(|e| InputFault::Io(format!("cannot check the file: {e}")))?;
        if m.len() != s.len {
            return Err(InputFault::Changed(format!(
                "it was {} bytes when the run opened it and is now {} bytes",
                s.len,
                m.len()
            )));
        }
        if m.modified().ok() != s.modified {
            return Err(InputFault::Changed("it was modified after the run opened it".into()));
        }
        if let Some(faults) = self.mapped.as_ref().and_then(|m| m.fault.as_ref()).map(fault::Guard::faults)
            && faults > 0
        {
            return Err(InputFault::Io(format!(
                "its file system failed to read {faults} page(s) of it (an I/O error; the system log may say more)"
            )));
        }
        Ok(())
    }

    /// Whether reads bypass the HDF5 library for plain stored bytes (an unfiltered
    /// dataset, mapped).
    pub fn is_direct(&self) -> bool {
        self.mapped
            .as_ref()
            .is_some_and(|m| matches!(m.store, Store::Contiguous(_) | Store::Raw(_)))
    }

    /// Who decodes the dataset's filters: "drover", "hdf5" or "none".
    pub fn decoder(&self) -> &'static str {
        self.decoder
    }

    /// Read a region as f64 into `out` (row-major, the region's shape).
    pub fn read_into(&self, region: &[Range<usize>], out: &mut [f64]) -> hdf5::Result<()> {
        let n: usize = region.iter().map(|r| r.len()).product();
        assert_eq!(out.len(), n, "output buffer of the region's size");
        if n == 0 {
            return Ok(());
        }
        let Some(m) = self.mapped.as_ref().filter(|_| !region.is_empty()) else {
            let a = read_region(&self.ds, region, self.chunk.as_deref())?;
            copy_logical(&a, out);
            return Ok(());
        };
        let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
        for_each_cell(region, &m.cell, |idx, sub| {
            let cell = m.cell(idx, sub)?;
            match &cell {
                Cell::Plain(bytes) => m.copy_cell(bytes, idx, sub, region, &shape, out),
                Cell::Decoded(bytes) => m.copy_cell(bytes, idx, sub, region, &shape, out),
                Cell::Library => {
                    let a = read_region(&self.ds, sub, self.chunk.as_deref())?;
                    scatter(&a, sub, region, &shape, out);
                }
            }
            Ok(())
        })
    }

    /// The region as a view of the mapped file, without a copy, when the data are
    /// stored raw as native-endian, aligned f64 and the region lies within one cell.
    pub fn view(&self, region: &[Range<usize>]) -> hdf5::Result<Option<ndarray::ArrayViewD<'_, f64>>> {
        let Some(m) = self
            .mapped
            .as_ref()
            .filter(|m| m.dtype == Dtype::F64 && m.big_endian == cfg!(target_endian = "big"))
        else {
            return Ok(None);
        };
        if !matches!(m.store, Store::Contiguous(_) | Store::Raw(_)) || region.is_empty() || region.iter().any(|r| r.is_empty()) {
            return Ok(None);
        }
        let idx: Vec<usize> = region.iter().zip(&m.cell).map(|(r, &c)| r.start / c).collect();
        if region.iter().zip(&m.cell).zip(&idx).any(|((r, &c), &i)| r.end > (i + 1) * c) {
            return Ok(None);
        }
        let cell = m.cell(&idx, region)?;
        let Cell::Plain(bytes) = &cell else {
            return Ok(None);
        };
        let bytes: &[u8] = bytes;
        // SAFETY: f64 has no invalid bit patterns; the alignment is checked by align_to,
        // which leaves the bytes it cannot align in the prefix.
        let (pre, cells, _) = unsafe { bytes.align_to::<f64>() };
        if !pre.is_empty() {
            return Ok(None);
        }
        let whole = ndarray::ArrayViewD::from_shape(IxDyn(&m.cell), &cells[..m.cell.iter().product::<usize>()]).expect("cell-sized slice");
        let mut v = whole;
        for (ax, (r, &i)) in region.iter().zip(&idx).enumerate() {
            let c = m.cell[ax];
            v.slice_axis_inplace(ndarray::Axis(ax), ndarray::Slice::from(r.start - i * c..r.end - i * c));
        }
        Ok(Some(v))
    }

    /// The elements of a storage cell when its values are worth reading cell by cell
    /// in their stored type (a chunked dataset, mapped, native byte order); `None`
    /// otherwise.
    pub fn typed_cell_elems(&self) -> Option<usize> {
        let m = self.mapped.as_ref()?;
        let native = m.big_endian == cfg!(target_endian = "big") || m.dtype.size() == 1;
        (native && matches!(m.store, Store::Raw(_) | Store::Filtered { .. })).then(|| m.cell.iter().product())
    }

    /// Call `f(part, values)` for each storage cell that `region` touches, in file
    /// order: `part` is the part of `region` in that cell (absolute coordinates) and
    /// `values` its stored values, typed, without a copy (a view of the mapped file or
    /// of the decoded chunk). Cells that cannot be viewed that way (unwritten, not
    /// aligned) are read as f64. Only for datasets with [`Reader::typed_cell_elems`].
    pub fn for_each_typed_cell(
        &self,
        region: &[Range<usize>],
        mut f: impl FnMut(&[Range<usize>], Typed<'_>) -> hdf5::Result<()>,
    ) -> hdf5::Result<()> {
        let m = self.mapped.as_ref().expect("typed cells of a mapped dataset");
        for_each_cell(region, &m.cell, |idx, sub| {
            let cell = m.cell(idx, sub)?;
            let bytes: Option<&[u8]> = match &cell {
                Cell::Plain(b) => Some(b),
                Cell::Decoded(b) => Some(b),
                Cell::Library => None,
            };
            if let Some(t) = bytes.and_then(|b| m.typed(b, idx, sub)) {
                return f(sub, t);
            }
            let shape: Vec<usize> = sub.iter().map(|r| r.len()).collect();
            let mut v = vec![0.0; shape.iter().product()];
            self.read_into(sub, &mut v)?;
            let a = ndarray::ArrayViewD::from_shape(IxDyn(&shape), &v).expect("sub-sized buffer");
            f(sub, Typed::F64(a))
        })
    }

    /// Read a region as an f64 array.
    pub fn read(&self, region: &[Range<usize>]) -> hdf5::Result<ArrayD<f64>> {
        let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
        let mut v = vec![0.0; shape.iter().product()];
        self.read_into(region, &mut v)?;
        ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| hdf5::Error::from(e.to_string()))
    }
}

impl Mapped {
    fn open(path: &Path, file: &hdf5::File, ds: &hdf5::Dataset, decoding: &Decoding) -> hdf5::Result<Option<Self>> {
        use hdf5::dataset::Layout;
        if file.userblock() != 0 || ds.ndim() == 0 {
            return Ok(None);
        }
        let Ok(dt) = ds.dtype() else { return Ok(None) };
        let Some(dtype) = dt.to_descriptor().ok().and_then(|d| Dtype::from_descriptor(&d).ok()) else {
            return Ok(None);
        };
        let big_endian = match dt.byte_order() {
            hdf5::datatype::ByteOrder::LittleEndian => false,
            hdf5::datatype::ByteOrder::BigEndian => true,
            hdf5::datatype::ByteOrder::None if dtype.size() == 1 => false,
            _ => return Ok(None),
        };
        let shape = ds.shape();
        let t0 = std::time::Instant::now();
        let (cell, store) = match (ds.layout(), decoding) {
            (Layout::Chunked, Decoding::None) => {
                let index = ChunkIndex::read(ds, false)?;
                (index.chunk().to_vec(), Store::Raw(index))
            }
            (Layout::Chunked, Decoding::Drover(p)) => {
                let index = ChunkIndex::read(ds, true)?;
                let cell = index.chunk().to_vec();
                let bytes = cell.iter().product::<usize>() * dtype.size();
                (
                    cell,
                    Store::Filtered {
                        index,
                        pipeline: p.clone(),
                        cache: ChunkCache::new(bytes),
                    },
                )
            }
            (Layout::Contiguous, Decoding::None) if ds.dcpl().is_ok_and(|p| p.external().is_empty()) => match ds.offset() {
                Some(off) => (shape.clone(), Store::Contiguous(off)),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        if let Store::Raw(index) | Store::Filtered { index, .. } = &store {
            tracing::debug!(chunks = index.stored(), seconds = t0.elapsed().as_secs_f64(), "chunk index read");
        }
        if cell.contains(&0) {
            return Ok(None);
        }
        let Ok(f) = std::fs::File::open(path) else { return Ok(None) };
        // SAFETY: the map is read-only and drover never writes its inputs; bounds are
        // checked against the map's length before every slice. A file truncated while
        // a run reads it makes a read fault (SIGBUS) past its new end: [`fault`] turns
        // it into a page of zeros, and the task, which checks the file before and after
        // reading ([`Reader::unchanged`]), fails the run saying what changed. The README
        // asks not to modify inputs during a run.
        let Ok(map) = (unsafe { memmap2::Mmap::map(&f) }) else {
            return Ok(None);
        };
        let cell_bytes = cell.iter().product::<usize>() as u64 * dtype.size() as u64;
        if let Store::Contiguous(off) = store
            && off.checked_add(cell_bytes).is_none_or(|end| end > map.len() as u64)
        {
            return Ok(None);
        }
        let budget = (2 * cell_bytes as usize).clamp(16 << 20, 64 << 20);
        Ok(Some(Self {
            fault: fault::register(map.as_ptr(), map.len()),
            map,
            file: f,
            dtype,
            big_endian,
            cell,
            shape,
            store,
            resident: Mutex::new(Resident {
                budget,
                bytes: 0,
                order: Default::default(),
                spans: Default::default(),
            }),
        }))
    }

    fn cell_bytes(&self) -> usize {
        self.cell.iter().product::<usize>() * self.dtype.size()
    }

    /// Read `len` stored bytes at `addr` into `buf`.
    fn read_stored(&self, addr: u64, len: u64, buf: &mut Vec<u8>) -> hdf5::Result<()> {
        use std::os::unix::fs::FileExt;
        if addr.checked_add(len).is_none_or(|e| e > self.map.len() as u64) {
            return Err(format!(
                "a chunk at byte {addr} (+{len}) lies beyond the end of the file ({} bytes)",
                self.map.len()
            )
            .into());
        }
        buf.resize(len as usize, 0);
        self.file
            .read_exact_at(buf, addr)
            .map_err(|e| hdf5::Error::from(format!("reading {len} bytes at byte {addr}: {e}")))
    }

    /// `len` stored bytes at `addr`, checked against the map.
    fn stored(&self, addr: u64, len: u64) -> hdf5::Result<&[u8]> {
        let end = addr.checked_add(len).filter(|&e| e <= self.map.len() as u64);
        match end {
            Some(end) => Ok(&self.map[addr as usize..end as usize]),
            None => Err(format!(
                "a chunk at byte {addr} (+{len}) lies beyond the end of the file ({} bytes)",
                self.map.len()
            )
            .into()),
        }
    }

    /// The bytes of the storage cell at grid index `idx`, of which `sub` (absolute
    /// coordinates) will be read.
    fn cell(&self, idx: &[usize], sub: &[Range<usize>]) -> hdf5::Result<Cell<'_>> {
        match &self.store {
            Store::Contiguous(off) => {
                self.touch_contiguous(*off, sub);
                Ok(Cell::Plain(self.stored(*off, self.cell_bytes() as u64)?))
            }
            Store::Raw(index) => {
                let Some(loc) = index.get(index.linear(idx)) else {
                    return Ok(Cell::Library);
                };
                let bytes = self.stored(loc.addr, loc.size)?;
                let origin: Vec<usize> = idx.iter().zip(&self.cell).map(|(&i, &c)| i * c).collect();
                self.touch_part(loc.addr, &origin, sub);
                Ok(Cell::Plain(bytes))
            }
            Store::Filtered { index, pipeline, cache } => {
                let linear = index.linear(idx);
                let Some(loc) = index.get(linear) else {
                    return Ok(Cell::Library);
                };
                let decode = |out: &mut Vec<u8>| -> hdf5::Result<()> {
                    // Compressed bytes are read once: a positioned read into this
                    // thread's buffer copies them from the page cache for less than
                    // mapping them in and out again would cost (page faults, TLB
                    // shootdowns), and they never count in the worker's RSS.
                    let mut stored = STORED.take();
                    let read = self.read_stored(loc.addr, loc.size, &mut stored);
                    let r = read.and_then(|()| {
                        pipeline.decode(&stored, loc.mask, self.cell_bytes(), out).map_err(|e| {
                            let at: Vec<usize> = idx.iter().zip(&self.cell).map(|(&i, &c)| i * c).collect();
                            hdf5::Error::from(format!(
                                "{e} (the HDF5 chunk starting at element {at:?}, stored at byte {})",
                                loc.addr
                            ))
                        })
                    });
                    STORED.set(stored);
                    tracing::trace!(chunk = ?idx, bytes = loc.size, pid = std::process::id(), "decoded chunk");
                    r
                };
                if self.covers_whole_cell(idx, sub) {
                    // Read whole: decoded into this thread's buffer, not kept.
                    let mut buf = WHOLE.take();
                    let r = decode(&mut buf);
                    let v = Arc::new(buf);
                    r?;
                    Ok(Cell::Decoded(v))
                } else {
                    cache
                        .get(linear, || {
                            let mut buf = DECODED.take(self.cell_bytes());
                            decode(&mut buf).map(|()| buf)
                        })
                        .map(Cell::Decoded)
                }
            }
        }
    }

    /// The values of `sub` (absolute) in cell `idx`, whose stored bytes are `bytes`,
    /// as a typed view; `None` when the bytes are not aligned for the type.
    fn typed<'b>(&self, bytes: &'b [u8], idx: &[usize], sub: &[Range<usize>]) -> Option<Typed<'b>> {
        let n: usize = self.cell.iter().product();
        macro_rules! view {
            ($t:ty, $v:ident) => {{
                // SAFETY: every bit pattern is a valid value of these numeric types;
                // align_to leaves what it cannot align in the prefix, checked empty.
                let (pre, vals, _) = unsafe { bytes.align_to::<$t>() };
                if !pre.is_empty() || vals.len() < n {
                    return None;
                }
                let mut v = ndarray::ArrayViewD::from_shape(IxDyn(&self.cell), &vals[..n]).ok()?;
                for (ax, (r, (&i, &c))) in sub.iter().zip(idx.iter().zip(&self.cell)).enumerate() {
                    v.slice_axis_inplace(ndarray::Axis(ax), ndarray::Slice::from(r.start - i * c..r.end - i * c));
                }
                Typed::$v(v)
            }};
        }
        Some(match self.dtype {
            Dtype::I8 => view!(i8, I8),
            Dtype::I16 => view!(i16, I16),
            Dtype::I32 => view!(i32, I32),
            Dtype::I64 => view!(i64, I64),
            Dtype::U8 => view!(u8, U8),
            Dtype::U16 => view!(u16, U16),
            Dtype::U32 => view!(u32, U32),
            Dtype::U64 => view!(u64, U64),
            Dtype::F32 => view!(f32, F32),
            Dtype::F64 => view!(f64, F64),
        })
    }

    /// Whether `sub` is all of cell `idx` that lies inside the dataset.
    fn covers_whole_cell(&self, idx: &[usize], sub: &[Range<usize>]) -> bool {
        sub.iter()
            .zip(idx)
            .zip(&self.cell)
            .zip(&self.shape)
            .all(|(((r, &i), &c), &n)| r.start == i * c && r.end == ((i + 1) * c).min(n))
    }

    /// Map the stored bytes `start..start + len` in, by windows of [`WINDOW`] bytes
    /// (one call per window instead of a page fault per few pages; a hint: kernels
    /// before 5.14 refuse it and the faults happen), unmapping the oldest windows
    /// beyond the budget. A window already mapped costs a set lookup: tiny chunks
    /// side by side share one, and no system call is made per chunk.
    fn touch(&self, start: u64, len: usize) {
        if len == 0 {
            return;
        }
        let end = start + len as u64;
        let mut r = self.resident.lock().expect("resident spans");
        for w in start / WINDOW..end.div_ceil(WINDOW) {
            let at = w * WINDOW;
            if !r.spans.insert(at) {
                continue;
            }
            let n = WINDOW.min(self.map.len() as u64 - at) as usize;
            let _ = self.map.advise_range(memmap2::Advice::PopulateRead, at as usize, n);
            r.order.push_back((at, n));
            r.bytes += n;
            while r.bytes > r.budget && r.order.len() > 1 {
                let (old, n) = r.order.pop_front().expect("non-empty");
                r.spans.remove(&old);
                r.bytes -= n;
                // SAFETY: the map is a read-only shared mapping of a file: dropping its
                // pages from this process only unmaps them; a later read of the span
                // (by any thread, even one reading it now) faults them in again from the
                // page cache, with the same contents.
                let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, old as usize, n) };
            }
        }
    }

    /// [`Mapped::touch`] for the span that `sub` covers in a contiguous dataset at `off`.
    fn touch_contiguous(&self, off: u64, sub: &[Range<usize>]) {
        self.touch_part(off, &vec![0; sub.len()], sub);
    }

    /// [`Mapped::touch`] for the span that `sub` (absolute coordinates) covers in the
    /// cell at `off` whose first element is at `origin`: a read of a few rows of a
    /// large chunk maps those rows, not the whole chunk.
    fn touch_part(&self, off: u64, origin: &[usize], sub: &[Range<usize>]) {
        let (mut first, mut last) = (0usize, 0usize);
        for (d, r) in sub.iter().enumerate() {
            let stride: usize = self.cell[d + 1..].iter().product();
            first += (r.start - origin[d]) * stride;
            last += (r.end - 1 - origin[d]) * stride;
        }
        let size = self.dtype.size() as u64;
        self.touch(off + first as u64 * size, ((last - first + 1) as u64 * size) as usize);
    }

    /// Copy the part `sub` (absolute coordinates) of cell `idx`, whose stored
    /// elements are `bytes`, into `out`, which holds `region` (of shape `shape`),
    /// converting to f64.
    fn copy_cell(&self, bytes: &[u8], idx: &[usize], sub: &[Range<usize>], region: &[Range<usize>], shape: &[usize], out: &mut [f64]) {
        let size = self.dtype.size();
        let cell_start: Vec<usize> = idx.iter().zip(&self.cell).map(|(&i, &c)| i * c).collect();
        let region_start: Vec<usize> = region.iter().map(|r| r.start).collect();
        for_each_row(sub, (&cell_start, &self.cell), (&region_start, shape), |src, dst, run| {
            convert(
                self.dtype,
                self.big_endian,
                &bytes[src * size..(src + run) * size],
                &mut out[dst..dst + run],
            )
        });
    }
}

impl Drop for Cell<'_> {
    fn drop(&mut self) {
        // A whole-chunk buffer nobody else holds goes back to its thread.
        if let Cell::Decoded(v) = self
            && let Ok(v) = Arc::try_unwrap(std::mem::take(v))
        {
            WHOLE.with_borrow_mut(|w| {
                if w.capacity() < v.capacity() {
                    DECODED.give(std::mem::replace(w, v));
                } else {
                    DECODED.give(v);
                }
            });
        }
    }
}

type Slot = Arc<OnceLock<Result<Arc<Vec<u8>>, String>>>;

/// Decoded chunks read in parts, shared by the process's threads, least recently
/// inserted evicted first beyond a budget. A chunk being decoded by one thread is
/// waited for by another that wants it (never decoded twice at once).
struct ChunkCache {
    budget: usize,
    chunk_bytes: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    slots: HashMap<u64, Slot>,
    order: VecDeque<u64>,
}

/// Threads of this process that read inputs (a worker sets it; 0: one per core).
static READ_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Tell the readers how many threads of this process read inputs at once: the
/// decoded-chunk cache keeps room for each one's chunk and two more.
pub fn set_read_threads(n: usize) {
    READ_THREADS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

impl ChunkCache {
    /// Room for the chunk each reading thread is in and two more (a block that cuts
    /// chunks moves on to the next while its neighbour still needs the last), at
    /// least 16 MiB.
    fn new(chunk_bytes: usize) -> Self {
        let threads = match READ_THREADS.load(std::sync::atomic::Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Self {
            budget: ((threads + 2) * chunk_bytes).max(16 << 20),
            chunk_bytes,
            inner: Mutex::default(),
        }
    }

    fn get(&self, key: u64, decode: impl FnOnce() -> hdf5::Result<Vec<u8>>) -> hdf5::Result<Arc<Vec<u8>>> {
        let slot = {
            let mut c = self.inner.lock().expect("chunk cache");
            let c = &mut *c;
            match c.slots.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s: Slot = Arc::default();
                    c.slots.insert(key, s.clone());
                    c.order.push_back(key);
                    while c.order.len() > 1 && c.order.len() * self.chunk_bytes > self.budget {
                        let old = c.order.pop_front().expect("non-empty");
                        if let Some(s) = c.slots.remove(&old)
                            && let Ok(lock) = Arc::try_unwrap(s)
                            && let Some(Ok(v)) = lock.into_inner()
                            && let Ok(v) = Arc::try_unwrap(v)
                        {
                            DECODED.give(v);
                        }
                    }
                    s
                }
            }
        };
        slot.get_or_init(|| decode().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(hdf5::Error::from)
    }
}
