"""Labelled data sets used by the demo, the tests and the benchmarks (installed, never downloaded)."""
