"""Running a pipeline: the plan, the step loop, executors, the step process, retries, resume and rerun."""
