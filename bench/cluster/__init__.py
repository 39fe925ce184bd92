"""``make cluster-bench``: the guards across several hosts, with latency and failover."""
