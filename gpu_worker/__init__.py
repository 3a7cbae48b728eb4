"""The GPU worker: a Django-free RQ worker process and the replace-background pipeline.

It never sees the database, API keys or credits: it reads an input from storage, writes
the output and matte back, and returns a small JSON result (see `gpu_worker.tasks`).
Nothing in this package may import Django or the web apps.
"""
