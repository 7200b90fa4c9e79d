"""ppvi: privacy-preserving person re-identification, visible and visible-infrared.

Kept import-free on purpose: `import ppvi_cli` must not pull torch or faiss.
"""

__version__ = "0.1.0"
