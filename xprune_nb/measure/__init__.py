"""Layer 5, measurement: metrics (accuracy, MACs, latency), what every step records, the
training loop and one retrain step, and the plumbing of distributed training."""
