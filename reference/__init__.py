"""Reference solution for Lab 04: the NumPy GPT of Lab 03 and the GPT-2 weight loader."""
