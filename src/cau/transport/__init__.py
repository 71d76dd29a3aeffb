"""Transports: how cau runs commands on a node."""
