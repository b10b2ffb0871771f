"""Interoperability with other frameworks: PyTorch weight import (`torch_import`).

torch is needed only to read PyTorch files and is imported on use.
"""
