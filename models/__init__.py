"""PyTorch architectures, data loaders and training loops (build time only; never imported by the service)."""
