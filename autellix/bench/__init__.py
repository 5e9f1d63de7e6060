"""Benchmarks: replay agent workloads against real engines or the simulator; shared metrics and reports.

`metrics` (s/token latency, JCT, throughput at equal latency) and `report` (tables, JSON, plots) serve
both `autellix bench` (real endpoints) and `autellix sim` (the simulator).
"""
