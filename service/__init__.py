"""ONNX Runtime model server (FastAPI)."""
