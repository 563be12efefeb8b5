"""Lab 04 grading harness: isolated, tiered checks of a GPT-2 weight loader."""

__version__ = "0.1.0"
