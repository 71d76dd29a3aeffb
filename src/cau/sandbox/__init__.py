"""The built-in sandbox: a simulated cluster and its update plug-in, for trying cau with nothing else."""
