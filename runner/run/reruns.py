"""``runner resume`` and ``runner rerun``: new runs made from a recorded one.

*Resume* continues a failed or interrupted run: the steps that succeeded are kept (their
scraps feed the steps downstream, their notebooks are copied into the new run's folder) and
the rest run with today's notebooks, so a fix to the failing notebook is picked up.
*Rerun* repeats a run exactly: every step runs again from the notebook bytes recorded with the
old run (``<step>.source.ipynb``), with its parameters and ``as_of``, whatever today's files say.
Both take the parameters as the old run requested them (``${...}`` resolved again).
"""

from __future__ import annotations


from runner.notebook import adapter
from runner.config import Config
from runner.errors import RunnerError
from runner.run.plan import RunRequest
from runner.store.records import RunRecord, RunStore


def resume_request(config: Config, run_id: str) -> RunRequest:
    record = RunStore(config.stores.runs).read(run_id)
    status = record.effective_status
    if status not in ("failed", "interrupted"):
        hint = "`runner rerun` repeats it" if status == "succeeded" else "wait for it, or stop it first"
        raise RunnerError(f"run {run_id} is {status}; only a failed or interrupted run can be resumed ({hint})")
    _same_steps(config, record)
    reuse = {name: step for name, step in record.steps.items() if step.status == "succeeded"}
    return RunRequest(
        record.pipeline, parameters=_requested(record), as_of=record.as_of, trigger="resume",
        scheduled_for=record.scheduled_for, exact_parameters=True, origin=record.run_id, reuse=reuse,
    )


def rerun_request(config: Config, run_id: str) -> RunRequest:
    store = RunStore(config.stores.runs)
    record = store.read(run_id)
    if record.effective_status == "running":
        raise RunnerError(f"run {run_id} is still running; rerun it once it ended")
    _same_steps(config, record)
    sources = {name: _source(config, store, record, name) for name in record.steps}
    return RunRequest(
        record.pipeline, parameters=_requested(record), as_of=record.as_of, trigger="rerun",
        scheduled_for=record.scheduled_for, exact_parameters=True, origin=record.run_id, notebooks=sources,
    )


def _requested(record: RunRecord) -> dict[str, dict]:
    return {name: dict(step.requested or step.parameters) for name, step in record.steps.items()}


def _same_steps(config: Config, record: RunRecord) -> None:
    now = list(config.pipeline(record.pipeline).steps)
    if sorted(now) != sorted(record.steps):
        raise RunnerError(
            f"the steps of {record.pipeline!r} changed since run {record.run_id} (then: {', '.join(record.steps)}; "
            f"now: {', '.join(now)}); run it afresh with `runner run {record.pipeline} --as-of {record.as_of}`"
        )


def _source(config: Config, store: RunStore, record: RunRecord, name: str) -> str:
    """A local file with the step's notebook bytes as the old run ran them."""
    step = record.steps[name]
    if step.source:
        return store.local_copy(f"{store.run_dir(record.pipeline, record.run_id)}/{step.source}",
                                config.stores.home / "staging" / "rerun")
    current = config.notebook_path(config.pipeline(record.pipeline).steps[name])
    if current.is_file() and adapter.sha256_file(current) == step.notebook_sha256:
        return str(current)  # an older record without the bytes, but the file has not changed
    raise RunnerError(
        f"run {record.run_id} did not keep the notebook of step {name!r} and {step.notebook} changed since "
        f"(sha256 {step.notebook_sha256[:12]} then); check that version out of git and run it by hand"
    )
