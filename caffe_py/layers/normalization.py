"""Normalization layers: BatchNorm, LRN, MVN, Scale, Bias."""
