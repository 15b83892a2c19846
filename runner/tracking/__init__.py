"""MLflow: tracking runs, the model registry and its champion/challenger rule, the served model code."""
