"""Update plug-ins shipped with cau (registered through the `cau.plugins` entry point)."""
