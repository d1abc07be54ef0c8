"""`make bench`: the service, the raw in-process limit and a naive server, side by side in one run."""
