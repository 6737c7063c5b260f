"""seftgen: alignment training data for SEFT, SELF-JUDGE and SRT self-improvement rounds.

The CLI (`seftgen ...`) is a thin layer over this package: every command is a function in
`seftgen.stages`, `seftgen.export` or `seftgen.io` that you can import and call directly.
"""

__version__ = "0.1.0"
