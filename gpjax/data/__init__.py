"""Data: built-in tfds sets (`builtin`) and the step-indexed pipeline (`input_pipeline`)."""
