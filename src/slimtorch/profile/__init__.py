"""Measure a model: parameters, MACs/FLOPs, activation memory, latency."""
