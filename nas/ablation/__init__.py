"""`nas ablate`: which components of an architecture matter, beyond seed noise."""
