//! HDF5 access: inspecting inputs, reading blocks as f64, writing outputs.
//!
//! The HDF5 library serializes all calls behind one lock; callers keep HDF5 work on
//! their own threads (never on the async runtime's threads).

use std::ops::Range;
use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Hyperslab, Selection, SliceOrIndex};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use super::geometry::{for_each_row, next_index};
use crate::config::workload::OutDtype;

/// Element type of an input dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dtype {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::I8 | Dtype::U8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    fn from_descriptor(d: &TypeDescriptor) -> Result<Self, String> {
        let int = |s: &IntSize, signed: bool| match (s, signed) {
            (IntSize::U1, true) => Dtype::I8,
            (IntSize::U2, true) => Dtype::I16,
            (IntSize::U4, true) => Dtype::I32,
            (IntSize::U8, true) => Dtype::I64,
            (IntSize::U1, false) => Dtype::U8,
            (IntSize::U2, false) => Dtype::U16,
            (IntSize::U4, false) => Dtype::U32,
            (IntSize::U8, false) => Dtype::U64,
        };
        Ok(match d {
            TypeDescriptor::Integer(s) => int(s, true),
            TypeDescriptor::Unsigned(s) => int(s, false),
            TypeDescriptor::Float(FloatSize::U4) => Dtype::F32,
            TypeDescriptor::Float(FloatSize::U8) => Dtype::F64,
            TypeDescriptor::Boolean => return Err("booleans".into()),
            TypeDescriptor::Enum(_) => return Err("enumerations".into()),
            TypeDescriptor::Compound(_) => return Err("compound records".into()),
            TypeDescriptor::FixedArray(..) | TypeDescriptor::VarLenArray(_) => return Err("arrays per element".into()),
            TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) => return Err("fixed-length strings".into()),
            TypeDescriptor::VarLenAscii | TypeDescriptor::VarLenUnicode => return Err("variable-length strings".into()),
            TypeDescriptor::Reference(_) => return Err("object references".into()),
            #[allow(unreachable_patterns)]
            _ => return Err("a non-numeric type".into()),
        })
    }
}

/// Why an input cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("file \"{0}\" does not exist")]
    NoFile(PathBuf),
    #[error("cannot open \"{path}\" as HDF5: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("dataset \"{dataset}\" not found in \"{path}\"{listing}")]
    NoDataset { path: PathBuf, dataset: String, listing: String },
    #[error("dataset \"{dataset}\" in \"{path}\" holds {what}, not numbers; drover computes on integer and float datasets")]
    NotNumeric { path: PathBuf, dataset: String, what: String },
    #[error("cannot inspect dataset \"{dataset}\" in \"{path}\": {reason}")]
    Inspect { path: PathBuf, dataset: String, reason: String },
}

/// What drover needs to know of an input dataset.
#[derive(Clone, Debug)]
pub struct DatasetInfo {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// HDF5 chunk shape, `None` when contiguous.
    pub chunk: Option<Vec<usize>>,
}

fn list_datasets(group: &hdf5::Group, prefix: &str, out: &mut Vec<String>) {
    if out.len() > 20 {
        return;
    }
    if let Ok(names) = group.member_names() {
        for n in names {
            let path = format!("{prefix}/{n}");
            if let Ok(g) = group.group(&n) {
                list_datasets(&g, &path, out);
            } else if group.dataset(&n).is_ok() {
                out.push(path);
            }
        }
    }
}

/// Open an input file and inspect one dataset.
pub fn inspect(path: &Path, dataset: &str) -> Result<DatasetInfo, InputError> {
    if !path.exists() {
        return Err(InputError::NoFile(path.to_path_buf()));
    }
    let file = hdf5::File::open(path).map_err(|e| InputError::Open {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let ds = match file.dataset(dataset) {
        Ok(ds) => ds,
        Err(_) => {
            let mut found = Vec::new();
            list_datasets(&file, "", &mut found);
            let listing = if found.is_empty() {
                "; the file holds no datasets".to_string()
            } else {
                format!("; datasets there: {}", found.join(", "))
            };
            return Err(InputError::NoDataset {
                path: path.into(),
                dataset: dataset.into(),
                listing,
            });
        }
    };
    let inspect_err = |e: hdf5::Error| InputError::Inspect {
        path: path.into(),
        dataset: dataset.into(),
        reason: e.to_string(),
    };
    let desc = ds.dtype().and_then(|t| t.to_descriptor()).map_err(inspect_err)?;
    let dtype = Dtype::from_descriptor(&desc).map_err(|what| InputError::NotNumeric {
        path: path.into(),
        dataset: dataset.into(),
        what,
    })?;
    Ok(DatasetInfo {
        shape: ds.shape(),
        dtype,
        chunk: ds.chunk(),
    })
}

fn hyperslab(region: &[Range<usize>]) -> Selection {
    let dims: Vec<SliceOrIndex> = region
        .iter()
        .map(|r| SliceOrIndex::SliceTo {
            start: r.start,
            step: 1,
            end: r.end,
            block: 1,
        })
        .collect();
    Selection::from(Hyperslab::from(dims))
}

/// An opened input dataset, ready for block reads.
///
/// When the dataset's raw data is stored as plain bytes in the file (contiguous, or
/// chunked with no filter pipeline; no user block), the file is also mapped read-only
/// and regions are read straight from the mapped chunks: no HDF5 call per read (one
/// chunk-index lookup per chunk, cached), no HDF5 global lock, no copy through a
/// `read` syscall. Everything else (filtered or unallocated chunks, compact or virtual
/// layouts) is read through the HDF5 library.
pub struct Reader {
    ds: hdf5::Dataset,
    chunk: Option<Vec<usize>>,
    direct: Option<Direct>,
}

struct Direct {
    map: memmap2::Mmap,
    dtype: Dtype,
    big_endian: bool,
    /// The storage cell's shape (the HDF5 chunk, or the whole dataset when contiguous).
    cell: Vec<usize>,
    /// Contiguous: the data's offset. Chunked: `None`, chunk addresses are looked up.
    contiguous: Option<u64>,
    /// Cells per dimension.
    grid: Vec<usize>,
    /// Chunk linear index -> file offset (`None`: not stored raw, read through HDF5).
    addrs: std::sync::Mutex<std::collections::HashMap<u64, Option<u64>>>,
    /// The parts of the map kept mapped into this process.
    resident: std::sync::Mutex<Resident>,
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
    order: std::collections::VecDeque<(u64, usize)>,
    spans: std::collections::HashSet<u64>,
}

/// Contiguous datasets are tracked in windows of this many bytes.
const WINDOW: u64 = 1 << 20;

impl Reader {
    /// Open `dataset` of `path` for reading.
    pub fn open(path: &Path, dataset: &str) -> hdf5::Result<Self> {
        let file = hdf5::File::open(path)?;
        let ds = file.dataset(dataset)?;
        let chunk = ds.chunk();
        let direct = Direct::open(path, &file, &ds);
        Ok(Self { ds, chunk, direct })
    }

    /// Whether reads bypass the HDF5 library (the dataset is stored raw).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Read a region as f64 into `out` (row-major, the region's shape).
    pub fn read_into(&self, region: &[Range<usize>], out: &mut [f64]) -> hdf5::Result<()> {
        let n: usize = region.iter().map(|r| r.len()).product();
        assert_eq!(out.len(), n, "output buffer of the region's size");
        if n == 0 {
            return Ok(());
        }
        let Some(direct) = self.direct.as_ref().filter(|_| !region.is_empty()) else {
            let a = read_region(&self.ds, region, self.chunk.as_deref())?;
            copy_logical(&a, out);
            return Ok(());
        };
        let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
        for_each_cell(region, &direct.cell, |cell_idx, sub| {
            match direct.cell_offset(&self.ds, cell_idx)? {
                Some(off) => direct.copy_cell(off, cell_idx, sub, region, &shape, out),
                None => {
                    let a = read_region(&self.ds, sub, self.chunk.as_deref())?;
                    scatter(&a, sub, region, &shape, out);
                    Ok(())
                }
            }
        })
    }

    /// The region as a view of the mapped file, without a copy, when the data are
    /// stored as native-endian, aligned f64 and the region lies within one stored cell.
    pub fn view(&self, region: &[Range<usize>]) -> hdf5::Result<Option<ndarray::ArrayViewD<'_, f64>>> {
        let Some(d) = self
            .direct
            .as_ref()
            .filter(|d| d.dtype == Dtype::F64 && d.big_endian == cfg!(target_endian = "big"))
        else {
            return Ok(None);
        };
        if region.is_empty() || region.iter().any(|r| r.is_empty()) {
            return Ok(None);
        }
        let idx: Vec<usize> = region.iter().zip(&d.cell).map(|(r, &c)| r.start / c).collect();
        if region.iter().zip(&d.cell).zip(&idx).any(|((r, &c), &i)| r.end > (i + 1) * c) {
            return Ok(None);
        }
        let Some(off) = d.cell_offset(&self.ds, &idx)? else {
            return Ok(None);
        };
        let bytes = &d.map[off as usize..off as usize + d.cell_bytes()];
        // SAFETY: f64 has no invalid bit patterns; the alignment is checked by align_to,
        // which leaves the bytes it cannot align in the prefix.
        let (pre, cells, _) = unsafe { bytes.align_to::<f64>() };
        if !pre.is_empty() {
            return Ok(None);
        }
        d.touch(off, &idx, region);
        let whole = ndarray::ArrayViewD::from_shape(IxDyn(&d.cell), &cells[..d.cell.iter().product::<usize>()]).expect("cell-sized slice");
        let mut v = whole;
        for (ax, (r, &i)) in region.iter().zip(&idx).enumerate() {
            let c = d.cell[ax];
            v.slice_axis_inplace(ndarray::Axis(ax), ndarray::Slice::from(r.start - i * c..r.end - i * c));
        }
        Ok(Some(v))
    }

    /// Read a region as an f64 array.
    pub fn read(&self, region: &[Range<usize>]) -> hdf5::Result<ArrayD<f64>> {
        let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
        let mut v = vec![0.0; shape.iter().product()];
        self.read_into(region, &mut v)?;
        ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| hdf5::Error::from(e.to_string()))
    }
}

impl Direct {
    fn open(path: &Path, file: &hdf5::File, ds: &hdf5::Dataset) -> Option<Self> {
        use hdf5::dataset::Layout;
        if std::env::var_os("DROVER_DIRECT_READS").is_some_and(|v| v == "0")
            || file.userblock() != 0
            || !ds.filters().is_empty()
            || ds.ndim() == 0
        {
            return None;
        }
        let dt = ds.dtype().ok()?;
        let dtype = Dtype::from_descriptor(&dt.to_descriptor().ok()?).ok()?;
        let big_endian = match dt.byte_order() {
            hdf5::datatype::ByteOrder::LittleEndian => false,
            hdf5::datatype::ByteOrder::BigEndian => true,
            hdf5::datatype::ByteOrder::None if dtype.size() == 1 => false,
            _ => return None,
        };
        let shape = ds.shape();
        let (cell, contiguous) = match ds.layout() {
            Layout::Chunked => (ds.chunk()?, None),
            Layout::Contiguous if ds.dcpl().ok()?.external().is_empty() => (shape.clone(), Some(ds.offset()?)),
            _ => return None,
        };
        if cell.contains(&0) {
            return None;
        }
        let f = std::fs::File::open(path).ok()?;
        // SAFETY: the map is read-only and drover never writes its inputs; bounds are
        // checked against the map's length before every slice. A file truncated by
        // someone else while a run reads it makes a read fault (SIGBUS): the worker is
        // lost, its tasks are retried, and a chunk that keeps killing workers fails the
        // run with its name. The README asks not to modify inputs during a run.
        let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
        let cell_bytes = cell.iter().product::<usize>() as u64 * dtype.size() as u64;
        if let Some(off) = contiguous
            && off.checked_add(cell_bytes).is_none_or(|end| end > map.len() as u64)
        {
            return None;
        }
        let grid = shape.iter().zip(&cell).map(|(s, c)| s.div_ceil(*c)).collect();
        let budget = (2 * cell_bytes as usize).clamp(16 << 20, 64 << 20);
        Some(Self {
            map,
            dtype,
            big_endian,
            cell,
            contiguous,
            grid,
            addrs: Default::default(),
            resident: std::sync::Mutex::new(Resident {
                budget,
                bytes: 0,
                order: Default::default(),
                spans: Default::default(),
            }),
        })
    }

    /// Before reading the bytes `sub` covers in cell `idx` (at file offset `off`):
    /// map them in if they are not, one call instead of a page fault per few pages (a
    /// hint; kernels before 5.14 refuse it and the faults happen), and unmap the
    /// oldest spans beyond the budget. A chunk is one span; a contiguous dataset is
    /// tracked in windows of [`WINDOW`] bytes.
    fn touch(&self, off: u64, idx: &[usize], sub: &[Range<usize>]) {
        let spans: Vec<(u64, usize)> = if self.contiguous.is_none() {
            vec![(off, self.cell_bytes())]
        } else {
            let (mut first, mut last) = (0usize, 0usize);
            for (d, r) in sub.iter().enumerate() {
                let stride: usize = self.cell[d + 1..].iter().product();
                let base = idx[d] * self.cell[d];
                first += (r.start - base) * stride;
                last += (r.end - 1 - base) * stride;
            }
            let size = self.dtype.size() as u64;
            let (a, b) = (off + first as u64 * size, off + (last as u64 + 1) * size);
            (a / WINDOW..b.div_ceil(WINDOW))
                .map(|w| {
                    let start = w * WINDOW;
                    (start, (WINDOW.min(self.map.len() as u64 - start)) as usize)
                })
                .collect()
        };
        let mut r = self.resident.lock().expect("resident spans");
        for (start, len) in spans {
            if !r.spans.insert(start) {
                continue;
            }
            let _ = self.map.advise_range(memmap2::Advice::PopulateRead, start as usize, len);
            r.order.push_back((start, len));
            r.bytes += len;
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

    fn cell_bytes(&self) -> usize {
        self.cell.iter().product::<usize>() * self.dtype.size()
    }

    /// The file offset of a storage cell, or `None` to read it through HDF5.
    fn cell_offset(&self, ds: &hdf5::Dataset, idx: &[usize]) -> hdf5::Result<Option<u64>> {
        if let Some(off) = self.contiguous {
            return Ok(Some(off));
        }
        let linear = idx.iter().zip(&self.grid).fold(0u64, |acc, (&i, &g)| acc * g as u64 + i as u64);
        if let Some(v) = self.addrs.lock().expect("chunk address cache").get(&linear) {
            return Ok(*v);
        }
        let whole = self.cell_bytes() as u64;
        let v = chunk_address(ds, idx, &self.cell, whole)?.filter(|a| a.checked_add(whole).is_some_and(|e| e <= self.map.len() as u64));
        self.addrs.lock().expect("chunk address cache").insert(linear, v);
        Ok(v)
    }

    /// Copy the part `sub` (absolute coordinates) of the cell at file offset `off` into
    /// `out`, which holds `region` (of shape `shape`), converting to f64.
    fn copy_cell(
        &self,
        off: u64,
        idx: &[usize],
        sub: &[Range<usize>],
        region: &[Range<usize>],
        shape: &[usize],
        out: &mut [f64],
    ) -> hdf5::Result<()> {
        let size = self.dtype.size();
        let bytes = &self.map[off as usize..off as usize + self.cell_bytes()];
        self.touch(off, idx, sub);
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
        Ok(())
    }
}

/// The file offset of the chunk at grid index `idx`, when it is stored raw: allocated
/// and `bytes` long (a filtered chunk has another size).
fn chunk_address(ds: &hdf5::Dataset, idx: &[usize], chunk: &[usize], bytes: u64) -> hdf5::Result<Option<u64>> {
    let coord: Vec<u64> = idx.iter().zip(chunk).map(|(&i, &c)| (i * c) as u64).collect();
    let (mut mask, mut addr, mut size) = (0u32, 0u64, 0u64);
    // SAFETY: `coord` has the dataset's rank; the out-pointers are valid locals; the
    // call runs under the HDF5 library lock like every other HDF5 call.
    let status =
        hdf5::sync::sync(|| unsafe { hdf5_sys::h5d::H5Dget_chunk_info_by_coord(ds.id(), coord.as_ptr(), &mut mask, &mut addr, &mut size) });
    if status < 0 {
        return Err(hdf5::Error::from(format!("cannot locate the HDF5 chunk at {coord:?}")));
    }
    Ok((addr != hdf5_sys::h5::HADDR_UNDEF && size == bytes).then_some(addr))
}

/// The file offsets of every chunk of an output dataset, row-major over its chunk
/// grid, when all are allocated and stored raw (created by [`create_output`] with
/// early allocation): blocks can then be written by other processes straight into
/// the file. `None` otherwise.
pub fn chunk_table(ds: &hdf5::Dataset, elem: usize) -> Option<Vec<u64>> {
    let chunk = ds.chunk()?;
    if !ds.filters().is_empty() {
        return None;
    }
    let grid: Vec<usize> = ds.shape().iter().zip(&chunk).map(|(s, c)| s.div_ceil(*c)).collect();
    let n: usize = grid.iter().product();
    let bytes = (chunk.iter().product::<usize>() * elem) as u64;
    let mut idx = vec![0usize; grid.len()];
    let mut table = Vec::with_capacity(n);
    let cells: Vec<Range<usize>> = grid.iter().map(|&g| 0..g).collect();
    loop {
        table.push(chunk_address(ds, &idx, &chunk, bytes).ok()??);
        if !next_index(&mut idx, &cells) {
            return (table.len() == n).then_some(table);
        }
    }
}

/// Writes blocks of an output straight into the chunks of its (temporary) file, for a
/// worker on the host that holds it ([`crate::proto::DirectOutput`]): no bytes cross
/// the network and the driver's single writer is not in the way. Each block covers
/// whole chunks, so no two workers ever write the same bytes.
pub struct ChunkSink {
    file: std::fs::File,
    shape: Vec<usize>,
    chunk: Vec<usize>,
    grid: Vec<usize>,
    addrs: Vec<u64>,
    elem: usize,
}

impl ChunkSink {
    /// Open the file if this process sees the one the server described (same device
    /// and inode); `None` otherwise (another host, or the file is gone).
    pub fn open(d: &crate::proto::DirectOutput, shape: &[usize], elem: usize) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&d.path).ok()?;
        if meta.dev() != d.dev || meta.ino() != d.ino || d.chunk.len() != shape.len() || d.chunk.contains(&0) {
            return None;
        }
        let grid: Vec<usize> = shape.iter().zip(&d.chunk).map(|(s, c)| s.div_ceil(*c)).collect();
        if grid.iter().product::<usize>() != d.addrs.len() {
            return None;
        }
        let file = std::fs::OpenOptions::new().write(true).open(&d.path).ok()?;
        Some(Self {
            file,
            shape: shape.to_vec(),
            chunk: d.chunk.clone(),
            grid,
            addrs: d.addrs.clone(),
            elem,
        })
    }

    /// Write a block (`bytes`: its values, row-major, little-endian) covering `region`.
    pub fn write_block(&self, region: &[Range<usize>], bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let e = self.elem;
        let cbytes = self.chunk.iter().product::<usize>() * e;
        let mut buf = super::buffers::PAYLOADS.take(cbytes);
        let bshape: Vec<usize> = region.iter().map(|r| r.len()).collect();
        let region_start: Vec<usize> = region.iter().map(|r| r.start).collect();
        let result = for_each_cell(region, &self.chunk, |idx, sub| {
            // The part of the chunk inside the dataset is `sub` (blocks cover whole
            // chunks); the rest is padding, zeroed.
            let inside = idx.iter().zip(&self.chunk).zip(&self.shape).all(|((&i, &c), &n)| (i + 1) * c <= n);
            if !inside {
                buf.fill(0);
            }
            let chunk_start: Vec<usize> = idx.iter().zip(&self.chunk).map(|(&i, &c)| i * c).collect();
            for_each_row(sub, (&region_start, &bshape), (&chunk_start, &self.chunk), |src, dst, run| {
                buf[dst * e..(dst + run) * e].copy_from_slice(&bytes[src * e..(src + run) * e])
            });
            let linear = idx.iter().zip(&self.grid).fold(0usize, |acc, (&i, &g)| acc * g + i);
            self.file
                .write_all_at(&buf, self.addrs[linear])
                .map_err(|e| hdf5::Error::from(e.to_string()))
        });
        super::buffers::PAYLOADS.give(buf);
        result.map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Convert stored elements to f64.
fn convert(dtype: Dtype, big_endian: bool, src: &[u8], dst: &mut [f64]) {
    macro_rules! conv {
        ($t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            let it = src.chunks_exact(N).zip(dst.iter_mut());
            if big_endian {
                it.for_each(|(b, d)| *d = <$t>::from_be_bytes(b.try_into().expect("element bytes")) as f64);
            } else {
                it.for_each(|(b, d)| *d = <$t>::from_le_bytes(b.try_into().expect("element bytes")) as f64);
            }
        }};
    }
    match dtype {
        Dtype::I8 => conv!(i8),
        Dtype::I16 => conv!(i16),
        Dtype::I32 => conv!(i32),
        Dtype::I64 => conv!(i64),
        Dtype::U8 => conv!(u8),
        Dtype::U16 => conv!(u16),
        Dtype::U32 => conv!(u32),
        Dtype::U64 => conv!(u64),
        Dtype::F32 => conv!(f32),
        Dtype::F64 => conv!(f64),
    }
}

/// Call `f(cell index, part of region in that cell)` for every storage cell of shape
/// `cell` that `region` touches, in file order.
fn for_each_cell(
    region: &[Range<usize>],
    cell: &[usize],
    mut f: impl FnMut(&[usize], &[Range<usize>]) -> hdf5::Result<()>,
) -> hdf5::Result<()> {
    let cells: Vec<Range<usize>> = region.iter().zip(cell).map(|(r, &c)| r.start / c..r.end.div_ceil(c)).collect();
    let mut idx: Vec<usize> = cells.iter().map(|c| c.start).collect();
    loop {
        let sub: Vec<Range<usize>> = idx
            .iter()
            .zip(cell)
            .zip(region)
            .map(|((&i, &c), r)| (i * c).max(r.start)..((i + 1) * c).min(r.end))
            .collect();
        f(&idx, &sub)?;
        if !next_index(&mut idx, &cells) {
            return Ok(());
        }
    }
}

/// Copy an array's values in logical order into `out`.
fn copy_logical(a: &ArrayD<f64>, out: &mut [f64]) {
    match a.as_slice() {
        Some(s) => out.copy_from_slice(s),
        None => out.iter_mut().zip(a.iter()).for_each(|(o, v)| *o = *v),
    }
}

/// Place `a`, the values of `sub`, at its place in `out`, which holds `region`.
fn scatter(a: &ArrayD<f64>, sub: &[Range<usize>], region: &[Range<usize>], shape: &[usize], out: &mut [f64]) {
    let mut view = ndarray::ArrayViewMutD::from_shape(IxDyn(shape), out).expect("region-sized buffer");
    for (d, (s, r)) in sub.iter().zip(region).enumerate() {
        view.slice_axis_inplace(ndarray::Axis(d), ndarray::Slice::from(s.start - r.start..s.end - r.start));
    }
    view.assign(a);
}

/// Read a region of a dataset, converted to f64 by the HDF5 library.
///
/// With the dataset's HDF5 chunk shape, a region spanning several chunks is read one
/// chunk at a time: HDF5 then reads each chunk straight into a contiguous buffer
/// instead of scattering every chunk row through a strided selection, which was
/// several times slower.
pub fn read_region(ds: &hdf5::Dataset, region: &[Range<usize>], chunk: Option<&[usize]>) -> hdf5::Result<ArrayD<f64>> {
    if region.is_empty() {
        let v: f64 = ds.as_reader().read_scalar()?;
        return Ok(ArrayD::from_elem(IxDyn(&[]), v));
    }
    let Some(chunk) = chunk.filter(|c| c.len() == region.len() && c.iter().all(|&n| n > 0)) else {
        return ds.as_reader().read_slice::<f64, _, IxDyn>(hyperslab(region));
    };
    // Chunk-grid cells the region touches, per dimension.
    let cells: Vec<Range<usize>> = region.iter().zip(chunk).map(|(r, &c)| r.start / c..r.end.div_ceil(c)).collect();
    if cells.iter().all(|c| c.len() <= 1) {
        return ds.as_reader().read_slice::<f64, _, IxDyn>(hyperslab(region));
    }
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    let mut out = vec![0.0; shape.iter().product()];
    for_each_cell(region, chunk, |_, sub| {
        let part = ds.as_reader().read_slice::<f64, _, IxDyn>(hyperslab(sub))?;
        scatter(&part, sub, region, &shape, &mut out);
        Ok(())
    })?;
    ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| hdf5::Error::from(e.to_string()))
}

/// Create an output dataset (intermediate groups included).
pub fn create_output(
    file: &hdf5::File,
    dataset: &str,
    shape: &[usize],
    chunk: Option<&[usize]>,
    dtype: OutDtype,
) -> hdf5::Result<hdf5::Dataset> {
    let builder = match dtype {
        OutDtype::F64 => file.new_dataset::<f64>(),
        OutDtype::F32 => file.new_dataset::<f32>(),
    };
    let mut builder = builder.shape(shape.to_vec());
    if let Some(c) = chunk
        && !shape.is_empty()
        && shape.iter().all(|&s| s > 0)
    {
        // Every chunk gets its place in the file now (without writing fill values),
        // so that workers can write blocks straight into it ([`chunk_table`]).
        builder = builder
            .chunk(c.to_vec())
            .alloc_time(Some(hdf5::dataset::AllocTime::Early))
            .fill_time(hdf5::dataset::FillTime::Never);
    }
    let lcpl = hdf5::plist::LinkCreate::build().create_intermediate_group(true).finish()?;
    builder.set_link_create_plist(&lcpl).create(dataset)
}

/// Write a region of an output from f64 or f32 little-endian bytes.
pub fn write_region(ds: &hdf5::Dataset, region: &[Range<usize>], dtype: OutDtype, bytes: &[u8]) -> hdf5::Result<()> {
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    // Written straight from the received bytes when they are aligned and native
    // little-endian (the usual case): a block is never copied to be written.
    macro_rules! in_place {
        ($t:ty) => {
            if cfg!(target_endian = "little") {
                // SAFETY: f32 and f64 have no invalid bit patterns; align_to puts the
                // bytes it cannot align in the prefix and suffix, checked empty here.
                let (pre, vals, post) = unsafe { bytes.align_to::<$t>() };
                if pre.is_empty() && post.is_empty() {
                    let a = ndarray::ArrayViewD::from_shape(IxDyn(&shape), vals).map_err(|e| hdf5::Error::from(e.to_string()))?;
                    if region.is_empty() {
                        return ds.as_writer().write_scalar(a.first().expect("0-d array has one element"));
                    }
                    if a.is_empty() {
                        return Ok(());
                    }
                    return ds.as_writer().write_slice(a, hyperslab(region));
                }
            }
        };
    }
    match dtype {
        OutDtype::F64 => in_place!(f64),
        OutDtype::F32 => in_place!(f32),
    }
    match dtype {
        OutDtype::F64 => {
            let v: Vec<f64> = bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
            let a = ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| hdf5::Error::from(e.to_string()))?;
            write_array(ds, region, &a)
        }
        OutDtype::F32 => {
            let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            let a = ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| hdf5::Error::from(e.to_string()))?;
            write_array(ds, region, &a)
        }
    }
}

fn write_array<T: hdf5::H5Type>(ds: &hdf5::Dataset, region: &[Range<usize>], a: &ArrayD<T>) -> hdf5::Result<()> {
    if region.is_empty() {
        return ds.as_writer().write_scalar(a.first().expect("0-d array has one element"));
    }
    if a.is_empty() {
        return Ok(());
    }
    ds.as_writer().write_slice(a, hyperslab(region))
}
