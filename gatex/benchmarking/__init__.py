"""Bench: latency, memory, load time and size of artifacts on each backend, every backend in a
worker process of its own (`worker`), the rows and their statistics (`run`), and the reports
(`report`: table, JSON, Markdown, plot). Importing this package imports nothing heavy.
"""
