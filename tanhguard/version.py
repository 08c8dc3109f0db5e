"""The version of tanhguard (read by setup.py, re-exported as
`tanhguard.__version__`)."""

__version__ = "0.1.0"
