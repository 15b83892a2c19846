"""The run store: run records (run.json, the executed notebooks) and the pipeline lock."""
