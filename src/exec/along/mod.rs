//! Operations along axes that need more of their operand than the region they
//! compute: order statistics (`median`, `quantile`, `percentile` and their `nan`
//! forms) and `sort` over whole axes, scans (`cumsum`, `cumprod`, `nancumsum`,
//! `nancumprod`) that carry the totals of the blocks before them, and windows
//! (`diff`, `rolling_*`) that read a halo. Each is a leaf to the kernels around it,
//! like a reshape: a region of its result is computed from its operand evaluated over
//! [`Along::source_region`] (read from the files, never gathered from other blocks).

mod call;
mod compute;

pub(super) use call::{call, names};

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// A scan's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scan {
    Sum,
    Prod,
    NanSum,
    NanProd,
}

impl Scan {
    /// The reduction whose per-segment results are the carries.
    pub fn carry_op(self) -> super::plan::ReduceOp {
        use super::plan::ReduceOp;
        match self {
            Scan::Sum => ReduceOp::Sum,
            Scan::Prod => ReduceOp::Prod,
            Scan::NanSum => ReduceOp::NanSum,
            Scan::NanProd => ReduceOp::NanProd,
        }
    }
}

/// A rolling window's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Roll {
    Sum,
    Mean,
    Min,
    Max,
    Std,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AlongOp {
    /// numpy's quantile (linear method) at each `q` in [0, 1] over the axes, or the
    /// median (the mean of the two middle values). `tuple`: q was a tuple (a leading
    /// result axis); `integral`: q was written as integers (taken, not interpolated);
    /// `nan`: NaNs are skipped (else a lane with a NaN gives NaN).
    Quantile {
        q: Vec<f64>,
        tuple: bool,
        integral: bool,
        nan: bool,
        median: bool,
    },
    /// numpy's sort along the axis (NaN last).
    Sort,
    /// Running totals along the axis. `seg`: the length of the segments whose totals
    /// the carry const holds (0: none, the whole axis in one block).
    Scan { op: Scan, seg: usize },
    /// `sliding_window_view(x, window, axis).OP(axis=-1)`: valid windows only.
    Rolling { op: Roll, window: usize, ddof: f64 },
    /// The n-th discrete difference (`logical`: booleans, numpy's not_equal).
    Diff { n: usize, logical: bool },
}

/// An operation along `axes` of an operand of shape `from`, with a result of shape
/// `to`; `carry`: the const holding a scan's segment totals (set when lowered).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Along {
    pub op: AlongOp,
    pub axes: Vec<usize>,
    pub from: Vec<usize>,
    pub to: Vec<usize>,
    pub carry: Option<u32>,
}

/// The most elements one task's operation may hold (its operand and result): 256 MiB
/// of f64, the ceiling reshapes use too.
pub const MAX_ELEMS: usize = 4 * super::plan::DEFAULT_BLOCK_ELEMS;

impl Along {
    /// Whether the operation needs whole lanes of its axes in every block.
    pub fn whole_axes(&self) -> bool {
        matches!(self.op, AlongOp::Quantile { .. } | AlongOp::Sort)
    }

    /// The axis of a one-axis operation.
    pub fn axis(&self) -> usize {
        self.axes[0]
    }

    /// Leading result axes that are not the operand's (a tuple of quantiles).
    fn lead(&self) -> usize {
        usize::from(matches!(self.op, AlongOp::Quantile { tuple: true, .. }))
    }

    /// For each result dimension, the operand dimension it follows (`None`: the axis
    /// of quantiles).
    pub fn operand_dim(&self, j: usize) -> Option<usize> {
        match self.op {
            AlongOp::Quantile { .. } => {
                let lead = self.lead();
                if j < lead {
                    return None;
                }
                (0..self.from.len()).filter(|d| !self.axes.contains(d)).nth(j - lead)
            }
            _ => Some(j),
        }
    }

    /// The operand region a region of the result is computed from.
    pub fn source_region(&self, region: &[Range<usize>]) -> Vec<Range<usize>> {
        match &self.op {
            AlongOp::Quantile { .. } => {
                let lead = self.lead();
                let mut kept = region[lead..].iter();
                (0..self.from.len())
                    .map(|d| {
                        if self.axes.contains(&d) {
                            0..self.from[d]
                        } else {
                            kept.next().expect("a kept axis").clone()
                        }
                    })
                    .collect()
            }
            op => {
                let a = self.axis();
                let mut src = region.to_vec();
                src[a] = match op {
                    AlongOp::Sort => 0..self.from[a],
                    AlongOp::Scan { seg: 0, .. } => 0..region[a].end,
                    AlongOp::Scan { seg, .. } => region[a].start / seg * seg..region[a].end,
                    AlongOp::Rolling { window, .. } => region[a].start..region[a].end + window - 1,
                    AlongOp::Diff { n, .. } => region[a].start..region[a].end + n,
                    AlongOp::Quantile { .. } => unreachable!("handled above"),
                };
                src
            }
        }
    }

    /// The result's block, given the operand's: each result dimension follows its
    /// operand dimension; whole lanes (order statistics, sort) are held within
    /// `target` elements by shrinking the other dimensions' blocks (down to one
    /// lane; [`Along::problem`] refuses lanes over [`MAX_ELEMS`]).
    pub fn block(&self, own: &[usize], target: usize) -> Vec<usize> {
        let mut b: Vec<usize> = (0..self.to.len())
            .map(|j| match self.operand_dim(j) {
                Some(d) => own[d].clamp(1, self.to[j].max(1)),
                None => self.to[j].max(1),
            })
            .collect();
        if let AlongOp::Sort = self.op {
            b[self.axis()] = self.to[self.axis()].max(1);
        }
        if self.whole_axes() {
            let lane = self.lane_len();
            // The result dimensions that follow a kept (not operated) operand axis.
            let kept: Vec<usize> = (0..b.len())
                .filter(|&j| self.operand_dim(j).is_some_and(|d| !self.axes.contains(&d)))
                .collect();
            loop {
                let cells: usize = kept.iter().map(|&j| b[j]).product();
                if cells.saturating_mul(lane) <= target {
                    break;
                }
                // Halve the longest block among the kept dimensions.
                let Some(&j) = kept.iter().filter(|&&j| b[j] > 1).max_by_key(|&&j| b[j]) else {
                    break;
                };
                b[j] = b[j].div_ceil(2);
            }
        }
        b
    }

    /// Elements of one lane: the product of the operated axes' lengths.
    pub fn lane_len(&self) -> usize {
        self.axes.iter().map(|&a| self.from[a]).product()
    }

    /// Why the operation cannot run in bounded tasks, if it cannot: a lane alone is
    /// larger than a task may hold.
    pub fn problem(&self, name: &str) -> Option<String> {
        if !self.whole_axes() {
            return None;
        }
        let lane = self.lane_len();
        (lane > MAX_ELEMS).then(|| {
            format!(
                "{name} needs whole lanes of {lane} elements ({} MiB of f64) in one task, more than the {} MiB a task may hold; \
                 compute it over fewer or shorter axes (a slice of the axis, or per group)",
                (lane * 8) >> 20,
                (MAX_ELEMS * 8) >> 20
            )
        })
    }
}
