"""The stores: SQLite (the default, `sqlite.py`) behind the `cau.ports.Store` protocol, and the
access records of the dashboard and API (`access.py`) in the same file."""
