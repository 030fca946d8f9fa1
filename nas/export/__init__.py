"""`nas export`: a torch-only standalone module (standalone.py) and the writer that fills it in (write.py)."""
