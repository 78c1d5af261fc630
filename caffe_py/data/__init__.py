"""Data input: transformation, databases (LMDB/LevelDB), image decoding, HDF5 sources and prefetching."""
