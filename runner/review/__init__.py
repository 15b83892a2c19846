"""The review site: run pages, diffs, trends, the local server, debugging a failed step."""
