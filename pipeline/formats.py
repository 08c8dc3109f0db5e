"""The data formats tanhguard reads and writes (no heavy imports: the command
line uses this to build its flags)."""

FORMATS = ("csv", "tfrecord", "parquet")
