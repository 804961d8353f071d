"""Datasets: annotation readers and writers, synthetic data, augmentation, loading."""
