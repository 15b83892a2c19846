"""A team's project: `runner init`/`runner new`, what `runner validate` checks, the JSON Schemas."""
