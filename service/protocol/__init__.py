"""Wire formats of the protocols other than the typed endpoints."""
