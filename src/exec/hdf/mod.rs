//! HDF5 access: inspecting inputs, reading blocks as f64, writing outputs.
//!
//! - [`reader`]: block reads (mapped bytes, drover's own decoding, the library).
//! - [`index`]: a chunked dataset's chunk index, read once.
//! - [`filters`]: filter pipelines drover decodes itself.
//! - [`cf`]: CF decoding of inputs (fill values, packing).
//! - [`fault`]: read faults on mapped inputs (a file truncated under a run) as errors.
//! - [`output`]: creating and writing outputs, workers' direct chunk writes.
//!
//! The HDF5 library serializes all calls behind one lock; callers keep HDF5 work on
//! their own threads (never on the async runtime's threads).

pub mod cf;
pub mod coords;
pub mod dims;
pub mod fault;
pub mod filters;
pub mod index;
pub mod output;
pub mod reader;
pub mod shared_fs;

pub use output::{ChunkSink, chunk_table, close_on_exec, compress_block, create_output, write_chunks, write_region};
pub use reader::Reader;

use std::ops::Range;
use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Hyperslab, Selection, SliceOrIndex};
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};

use super::geometry::next_index;
use filters::{Decoding, Pipeline, filter_name};

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
    #[error(
        "dataset \"{dataset}\" in \"{path}\" is compressed with HDF5 filter {id} ({}), which drover does not decode and this HDF5 library does not have; drover decodes gzip, shuffle, fletcher32, zstd, lz4, blosc and bitshuffle: rewrite the file with one of them (e.g. h5repack -f GZIP=4)",
        filter_name(*id)
    )]
    Filter { path: PathBuf, dataset: String, id: u32 },
    #[error(
        "dataset \"{dataset}\" in \"{path}\": CF {source}; fix the attribute, or set decode = false on the input to read the stored values"
    )]
    Cf {
        path: PathBuf,
        dataset: String,
        source: cf::BadAttribute,
    },
}

/// What drover needs to know of an input dataset.
#[derive(Clone, Debug)]
pub struct DatasetInfo {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// HDF5 chunk shape, `None` when contiguous.
    pub chunk: Option<Vec<usize>>,
    /// CF decoding to apply (none when asked not to, or without CF attributes).
    pub cf: Option<cf::Cf>,
    /// The time axis, or why there is none.
    pub time: coords::TimeInfo,
    pub dims: Vec<dims::InputDim>,
    pub attrs: dims::VarAttrs,
    /// Its chunks are filtered (compressed): reading part of one decodes all of it.
    pub filtered: bool,
}

/// How a dataset's chunks are decoded (no filters, by drover, by the HDF5 library, or
/// not at all here).
pub fn decoding_of(ds: &hdf5::Dataset) -> Decoding {
    let elem = ds.dtype().map_or(1, |t| t.size());
    Pipeline::for_dataset(&ds.filters(), elem, |id| {
        // SAFETY: a plain query of the filter registry, under the library lock.
        hdf5::sync::sync(|| unsafe { hdf5_sys::h5z::H5Zfilter_avail(id as hdf5_sys::h5z::H5Z_filter_t) }) > 0
    })
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

/// Open an input file and inspect one dataset; `decode`: read its CF attributes.
pub fn inspect(path: &Path, dataset: &str, decode: bool, time: Option<&str>) -> Result<DatasetInfo, InputError> {
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
    let decoding = decoding_of(&ds);
    if let Decoding::Unsupported(id) = decoding {
        return Err(InputError::Filter {
            path: path.into(),
            dataset: dataset.into(),
            id,
        });
    }
    let cf = if decode {
        cf::Cf::of(&ds, dtype).map_err(|source| InputError::Cf {
            path: path.into(),
            dataset: dataset.into(),
            source,
        })?
    } else {
        None
    };
    let shape = ds.shape();
    let time = coords::time_axis(&file, path, dataset, &shape, time);
    Ok(DatasetInfo {
        shape,
        dtype,
        chunk: ds.chunk(),
        cf,
        dims: dims::input_dims(&ds, dataset, &time),
        attrs: dims::var_attrs(&ds),
        time,
        filtered: !matches!(decoding, Decoding::None),
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
