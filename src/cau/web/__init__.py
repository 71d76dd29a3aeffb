"""`cau serve`: the REST API (/api/v1), the dashboard and the run worker in one process."""
