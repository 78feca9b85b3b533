"""pysampler throughput benchmarks (pytest-benchmark); see README.md."""
