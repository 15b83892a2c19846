"""`runner serve`: the pull side of a model, answering scoring requests with the version an alias points at."""
