"""The reference credit-risk pipelines replayed on generated data (`runner demo`)."""
