"""oodbench: a benchmarking suite for robust out-of-distribution detection (the ATOM paper's protocol)."""

__version__ = "0.1.0"
