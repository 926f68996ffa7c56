"""Time-stepping workloads for issue #26 (see run.py): one module per workload."""
