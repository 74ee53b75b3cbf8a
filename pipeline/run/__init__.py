"""The run wing, on the engines: the session and its fleet, builds, build-time services,
publishing, the orchestration of them, and the report."""
