"""cau: Cluster-Aware Updating for Linux clusters."""

__version__ = "0.1.0"
