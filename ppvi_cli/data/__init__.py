"""Dataset readers, the synthetic VI generator and image I/O."""
