//! Outputs: creating datasets, writing regions (the driver's writer), and writing
//! whole chunks straight into the file (workers on the driver's host).

use std::ops::Range;

use ndarray::{ArrayD, IxDyn};

use super::{for_each_cell, hyperslab};
use crate::config::workload::OutDtype;
use crate::exec::geometry::for_each_row;

/// The file offsets of every chunk of an output dataset, row-major over its chunk
/// grid, when all are allocated and stored raw (created by [`create_output`] with
/// early allocation): blocks can then be written by other processes straight into
/// the file. `None` otherwise.
pub fn chunk_table(ds: &hdf5::Dataset, elem: usize) -> Option<Vec<u64>> {
    if !ds.filters().is_empty() || ds.dtype().ok()?.size() != elem {
        return None;
    }
    super::index::ChunkIndex::read(ds, false).ok()?.all_addresses()
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
        let mut buf = crate::exec::buffers::PAYLOADS.take(cbytes);
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
        crate::exec::buffers::PAYLOADS.give(buf);
        result.map_err(|e| std::io::Error::other(e.to_string()))
    }
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
        OutDtype::I8 => file.new_dataset::<i8>(),
        OutDtype::I16 => file.new_dataset::<i16>(),
        OutDtype::I32 => file.new_dataset::<i32>(),
        OutDtype::I64 => file.new_dataset::<i64>(),
        OutDtype::U8 => file.new_dataset::<u8>(),
        OutDtype::U16 => file.new_dataset::<u16>(),
        OutDtype::U32 => file.new_dataset::<u32>(),
        OutDtype::U64 => file.new_dataset::<u64>(),
        OutDtype::Bool => file.new_dataset::<bool>(),
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

/// Write a region of an output from its little-endian bytes (the output's dtype;
/// bool as one byte 0 or 1).
pub fn write_region(ds: &hdf5::Dataset, region: &[Range<usize>], dtype: OutDtype, bytes: &[u8]) -> hdf5::Result<()> {
    let shape: Vec<usize> = region.iter().map(|r| r.len()).collect();
    // Written straight from the received bytes when they are aligned and native
    // little-endian (the usual case): a block is never copied to be written.
    macro_rules! numeric {
        ($t:ty) => {{
            if cfg!(target_endian = "little") {
                // SAFETY: these numeric types have no invalid bit patterns; align_to
                // puts the bytes it cannot align in the prefix and suffix, checked
                // empty here.
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
            const W: usize = std::mem::size_of::<$t>();
            let v: Vec<$t> = bytes
                .chunks_exact(W)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("width")))
                .collect();
            let a = ArrayD::from_shape_vec(IxDyn(&shape), v).map_err(|e| hdf5::Error::from(e.to_string()))?;
            write_array(ds, region, &a)
        }};
    }
    match dtype {
        OutDtype::F64 => numeric!(f64),
        OutDtype::F32 => numeric!(f32),
        OutDtype::I8 => numeric!(i8),
        OutDtype::I16 => numeric!(i16),
        OutDtype::I32 => numeric!(i32),
        OutDtype::I64 => numeric!(i64),
        OutDtype::U8 => numeric!(u8),
        OutDtype::U16 => numeric!(u16),
        OutDtype::U32 => numeric!(u32),
        OutDtype::U64 => numeric!(u64),
        OutDtype::Bool => {
            let v: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
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
