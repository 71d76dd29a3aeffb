"""The run journal: what a coordinator records of an Updating Run (events.py: a pydantic model per
kind of event and per step) and what is derived from it by replaying it (progress.py)."""
