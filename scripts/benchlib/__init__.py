"""drover's benchmark (scripts/bench.sh runs it through scripts/bench.py).

common      constants, the case registry, small helpers
data        the data in scratch/bench/ (made once, kept while up to date)
memory      peak-RSS sampling of a process tree
contenders  raw reads, h5py loops, drover, the decode limit, HDF5 stand-ins for dask
classic     the reduction, anomaly and tiny cases
newcases    the compressed and tiny-chunk cases
surface     the expression-surface cases
movement    the data-movement cases (rechunk, median over time)
taskjobs    the task-job cases (drover submit vs xargs -P 2, dask, Parsl)
runner      one case: warm-up, checks, rotating rounds
report      medians, ratios, targets, memory, checks: the table
cli         options and main
"""
