//! The chunk index of a chunked dataset, read once, looked up in O(1).
//!
//! HDF5 keeps a chunked dataset's chunk addresses in one of five index structures
//! (v1 B-tree, v2 B-tree, fixed array, extensible array, single chunk; implicit for
//! early-allocated unfiltered data). Asking the library for one chunk at a time
//! (`H5Dget_chunk_info_by_coord`) walks that index on every call, and in HDF5 1.10
//! the by-index variant even counts from the first chunk: a dataset of 40,000
//! chunks took 26 s to read that way. Here `H5Dchunk_iter` (HDF5 ≥ 1.14) visits
//! every stored chunk in one pass, whatever the index type, and the addresses go
//! into a flat table indexed by the chunk's row-major grid position: 8 bytes per
//! chunk (12 with filters), a million chunks in 8-12 MB.

use std::collections::HashMap;

/// Where a stored chunk is, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    /// File address (relative to the file's base: no user block here).
    pub addr: u64,
    /// Bytes stored (after filters).
    pub size: u64,
    /// Filters skipped for this chunk (bit `i`: filter `i`).
    pub mask: u32,
}

/// Every stored chunk of a dataset.
#[derive(Debug)]
pub struct ChunkIndex {
    chunk: Vec<usize>,
    grid: Vec<usize>,
    /// Per grid position (row-major): the address, `UNSTORED` when not written.
    addrs: Vec<u64>,
    /// Stored sizes per grid position, when they vary (filtered datasets); `None`:
    /// every chunk holds `whole` bytes.
    sizes: Option<Vec<u32>>,
    whole: u64,
    /// The few chunks with a non-zero filter mask.
    masks: HashMap<u64, u32>,
}

const UNSTORED: u64 = u64::MAX;

impl ChunkIndex {
    /// Read the index of a chunked dataset in one pass. `filtered`: chunk sizes vary.
    pub fn read(ds: &hdf5::Dataset, filtered: bool) -> hdf5::Result<Self> {
        let chunk = ds.chunk().ok_or_else(|| hdf5::Error::from("not a chunked dataset"))?;
        if chunk.contains(&0) {
            return Err("a chunk dimension of length 0".into());
        }
        let shape = ds.shape();
        let grid: Vec<usize> = shape.iter().zip(&chunk).map(|(s, c)| s.div_ceil(*c)).collect();
        let n: usize = grid.iter().product();
        let elem = ds.dtype()?.size() as u64;
        let whole = chunk.iter().product::<usize>() as u64 * elem;
        let mut addrs = vec![UNSTORED; n];
        let mut sizes = filtered.then(|| vec![0u32; n]);
        let mut masks = HashMap::new();
        let mut bad = None;
        ds.chunks_visit(|info| {
            // The chunk's first element's coordinates -> its grid position.
            let mut linear = 0usize;
            for ((&o, &c), &g) in info.offset.iter().zip(&chunk).zip(&grid) {
                let i = o as usize / c;
                if i >= g {
                    bad = Some(format!("a chunk at {:?} outside the dataset", info.offset));
                    return -1;
                }
                linear = linear * g + i;
            }
            addrs[linear] = info.addr;
            match &mut sizes {
                Some(s) => s[linear] = info.size.min(u32::MAX as u64) as u32,
                None if info.size != whole => {
                    bad = Some(format!("an unfiltered chunk of {} bytes, not {whole}", info.size));
                    return -1;
                }
                None => {}
            }
            if info.filter_mask != 0 {
                masks.insert(linear as u64, info.filter_mask);
            }
            0
        })
        .map_err(|e| hdf5::Error::from(bad.clone().unwrap_or_else(|| e.to_string())))?;
        if let Some(why) = bad {
            return Err(why.into());
        }
        Ok(Self {
            chunk,
            grid,
            addrs,
            sizes,
            whole,
            masks,
        })
    }

    /// The chunk shape.
    pub fn chunk(&self) -> &[usize] {
        &self.chunk
    }

    /// Chunks per dimension.
    pub fn grid(&self) -> &[usize] {
        &self.grid
    }

    /// Row-major grid position of the chunk at grid index `idx`.
    pub fn linear(&self, idx: &[usize]) -> u64 {
        idx.iter().zip(&self.grid).fold(0u64, |acc, (&i, &g)| acc * g as u64 + i as u64)
    }

    /// The stored chunk at grid position `linear`, `None` when it was never written.
    pub fn get(&self, linear: u64) -> Option<ChunkLoc> {
        let addr = *self.addrs.get(linear as usize)?;
        if addr == UNSTORED || addr == hdf5_sys::h5::HADDR_UNDEF {
            return None;
        }
        let size = match &self.sizes {
            Some(s) => u64::from(s[linear as usize]),
            None => self.whole,
        };
        let mask = self.masks.get(&linear).copied().unwrap_or(0);
        Some(ChunkLoc { addr, size, mask })
    }

    /// Every chunk's address in grid order, when all are stored.
    pub fn all_addresses(&self) -> Option<Vec<u64>> {
        (!self.addrs.contains(&UNSTORED)).then(|| self.addrs.clone())
    }

    /// Every stored chunk, in grid order.
    pub fn locations(&self) -> impl Iterator<Item = ChunkLoc> + '_ {
        (0..self.addrs.len() as u64).filter_map(|i| self.get(i))
    }

    /// Number of stored chunks.
    pub fn stored(&self) -> usize {
        self.addrs.iter().filter(|&&a| a != UNSTORED).count()
    }
}

#[cfg(test)]
mod tests {
    //! The index is read through `H5Dchunk_iter` on every HDF5 index type and must
    //! agree with the library's one-chunk-at-a-time answer.
    use super::*;
    use hdf5::file::LibraryVersion;

    fn check(ds: &hdf5::Dataset, filtered: bool, expect_stored: usize) {
        let index = ChunkIndex::read(ds, filtered).unwrap();
        assert_eq!(index.stored(), expect_stored);
        let chunk = ds.chunk().unwrap();
        let mut idx = vec![0usize; chunk.len()];
        let cells: Vec<std::ops::Range<usize>> = index.grid().iter().map(|&g| 0..g).collect();
        loop {
            let coord: Vec<u64> = idx.iter().zip(&chunk).map(|(&i, &c)| (i * c) as u64).collect();
            let (mut mask, mut addr, mut size) = (0u32, 0u64, 0u64);
            // SAFETY: rank-long coordinates, valid out-pointers, under the library lock.
            let status = hdf5::sync::sync(|| unsafe {
                hdf5_sys::h5d::H5Dget_chunk_info_by_coord(ds.id(), coord.as_ptr(), &mut mask, &mut addr, &mut size)
            });
            assert!(status >= 0);
            let expect = (addr != hdf5_sys::h5::HADDR_UNDEF).then_some(ChunkLoc { addr, size, mask });
            assert_eq!(index.get(index.linear(&idx)), expect, "chunk {idx:?}");
            if !crate::exec::geometry::next_index(&mut idx, &cells) {
                break;
            }
        }
    }

    fn file(latest: bool) -> (tempfile::TempDir, hdf5::File) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = hdf5::File::with_options();
        if latest {
            b.with_fapl(|p| p.libver_bounds(LibraryVersion::latest(), LibraryVersion::latest()));
        } else {
            b.with_fapl(|p| p.libver_bounds(LibraryVersion::Earliest, LibraryVersion::latest()));
        }
        let f = b.create(dir.path().join("index.h5")).unwrap();
        (dir, f)
    }

    fn data(n: usize, m: usize) -> ndarray::Array2<f32> {
        ndarray::Array2::from_shape_fn((n, m), |(i, j)| (i * m + j) as f32)
    }

    /// A chunked f32 dataset, deflated when `filtered`.
    fn create(f: &hdf5::File, name: &str, shape: impl Into<hdf5::Extents>, chunk: (usize, usize), filtered: bool) -> hdf5::Dataset {
        let b = f.new_dataset::<f32>().shape(shape).chunk(chunk);
        let b = if filtered { b.deflate(4) } else { b };
        b.create(name).unwrap()
    }

    /// Each layout: (latest format, resizable dims, chunk, filtered).
    #[test]
    fn every_index_type_agrees_with_the_library() {
        let (n, m) = (37usize, 23usize);
        for filtered in [false, true] {
            // v1 B-tree: the earliest format.
            let (_d, f) = file(false);
            let ds = create(&f, "btree1", (n, m), (5, 4), filtered);
            ds.write(&data(n, m)).unwrap();
            check(&ds, filtered, 8 * 6);

            let (_d, f) = file(true);
            // Fixed array: fixed shape (filtered, or unfiltered without early allocation).
            let ds = create(&f, "fixed", (n, m), (5, 4), filtered);
            ds.write(&data(n, m)).unwrap();
            check(&ds, filtered, 8 * 6);
            // Extensible array: one unlimited dimension; chunks partly written.
            let ds = create(&f, "earray", (n.., m), (5, 4), filtered);
            ds.write_slice(&data(10, m), ndarray::s![0..10, ..]).unwrap();
            check(&ds, filtered, 2 * 6);
            // v2 B-tree: two unlimited dimensions.
            let ds = create(&f, "btree2", (n.., m..), (5, 4), filtered);
            ds.write(&data(n, m)).unwrap();
            check(&ds, filtered, 8 * 6);
            // Single chunk: the chunk is the dataset.
            let ds = create(&f, "single", (n, m), (n, m), filtered);
            ds.write(&data(n, m)).unwrap();
            check(&ds, filtered, 1);
        }
    }
}
