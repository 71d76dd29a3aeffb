"""Cluster providers shipped with cau (registered through the `cau.providers` entry point)."""
