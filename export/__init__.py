"""Train, export to ONNX, verify and write the model repository (`python -m export build`)."""
