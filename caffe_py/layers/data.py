"""Data layers: Input, Data, ImageData, HDF5Data, MemoryData, DummyData, WindowData, HDF5Output."""
