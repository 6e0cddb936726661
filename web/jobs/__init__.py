"""Batch jobs, one package: the job store (`store`), its HTTP resources (`resources`) and the
bounded readers of the archives and folders a job arrives as (`archives` and what it calls)."""
