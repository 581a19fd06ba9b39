"""Engines: code that runs pipelines (diffusers), per-family conventions, quantization, LoRA adapters,
samplers, accelerations and the tiny test model. (torchao's import-time notices about CUDA kernels
it cannot load are quieted with the other third-party loggers in logs.py.)"""
