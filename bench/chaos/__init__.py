"""The chaos run (``make chaos``): see ``bench/chaos/run.py``."""
