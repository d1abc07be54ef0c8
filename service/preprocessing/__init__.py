"""Pure pre- and post-processing shared by training, evaluation and serving.

numpy (and Pillow or tokenizers where a format needs them) in, numpy out: no pydantic, no HTTP, no
error messages meant for clients. Training imports only this layer from ``service``, so rewording an
API message never changes a model's weights or its build key.
"""
