"""Secrets: a parameter given as ``${env.NAME}`` reaches the kernel and nothing the runner keeps or shows.

The run test greps every file of the run (run store, logs, MLflow's database and artifacts, the
review site, the debug notebook) and every MLflow record for the secret's value.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from runner.config import load_config
from runner.store.records import RunStore
from runner.secrets import MASK, Redactor, kernel_source, strip_userinfo

SECRET = "tok-7Hq2-unguessable-91xZ"
KERNELSPEC = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def write_notebook(path: Path, parameters: str, *cells: str) -> str:
    nb = new_notebook(cells=[new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                             *(new_code_cell(source) for source in cells)], metadata=KERNELSPEC)
    nbformat.write(nb, str(path))
    return str(path)


@pytest.fixture
def crm(project, monkeypatch):
    """A two-step project reading a CRM token from the environment: `pull` uses it (and leaks it every way
    a notebook can), `push` fails with it in the error."""
    monkeypatch.setenv("CRM_TOKEN", SECRET)
    pull = write_notebook(
        project.root / "pull.ipynb",
        'token = ""  # secret: the CRM API token\ndsn = ""\nbatch = 10',
        "import hashlib, logging, sys\nimport scrapbook as sb\nfrom IPython.display import HTML, display",
        'sb.glue("token_sha256", hashlib.sha256(token.encode()).hexdigest())\n'
        'sb.glue("dsn_ok", dsn == "postgresql://svc:" + token + "@db.example/crm")\n'
        'sb.glue("leaked", "sent " + token)\n'
        'print("token is", token)\n'
        'print("dsn is", dsn, file=sys.stderr)\n'
        'logging.getLogger("crm").warning("calling the CRM with %s", token)\n'
        'display(HTML("<b>" + token + "</b>"))\n'
        'token',
    )
    push = write_notebook(
        project.root / "push.ipynb",
        'token = ""  # secret\nnote = ""',
        'raise PermissionError("the CRM refused token " + token + " for " + note)',
    )
    project.write({"crm_sync": {"steps": {
        "pull": {"notebook": pull, "parameters": {
            "token": "${env.CRM_TOKEN}", "dsn": "postgresql://svc:${env.CRM_TOKEN}@db.example/crm"}},
        "push": {"notebook": push, "needs": ["pull"],
                 "parameters": {"token": "${env.CRM_TOKEN}", "note": "${steps.pull.leaked}"}},
    }}})
    return project


def files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()
                  and needle in path.read_bytes())


@pytest.mark.slow
def test_a_secret_reaches_the_kernel_and_no_file_record_or_output_of_the_run(crm, tmp_path):
    ran = crm.cli_process("run", "crm_sync")
    assert ran.returncode == 1, ran.stderr  # push fails, as written
    assert SECRET not in ran.stdout + ran.stderr
    record = RunStore(load_config(crm.config).stores.runs).list()[0]
    pull, push = record.steps["pull"], record.steps["push"]

    # the kernel had the value: the notebook's own hash of it, and the URL built around it
    assert pull.status == "succeeded"
    assert pull.scraps["token_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()
    assert pull.scraps["dsn_ok"] is True
    # the record keeps the reference, never the value; what the notebook leaked is masked
    assert pull.parameters["token"] == "${env.CRM_TOKEN}"
    assert pull.parameters["dsn"] == "postgresql://svc:${env.CRM_TOKEN}@db.example/crm"
    assert pull.scraps["leaked"] == f"sent {MASK}"
    assert push.status == "failed" and push.error.ename == "PermissionError"
    assert push.error.evalue == f"the CRM refused token {MASK} for sent {MASK}"

    run_dir = Path(RunStore(load_config(crm.config).stores.runs).run_dir("crm_sync", record.run_id))
    executed = nbformat.read(run_dir / "pull.ipynb", as_version=4)
    injected = next(cell for cell in executed.cells if "injected-parameters" in cell.metadata.get("tags", []))
    assert "_runner_os.environ['CRM_TOKEN']" in injected.source
    shown = json.dumps([cell.get("outputs", []) for cell in executed.cells])
    assert f"token is {MASK}" in shown and f"<b>{MASK}</b>" in shown and f"calling the CRM with {MASK}" in shown
    assert f"'{MASK}'" in shown  # the cell's own value, as its result
    assert executed.metadata.papermill.parameters["token"] == "${env.CRM_TOKEN}"

    # everything people look at afterwards
    shown_json = crm.cli("show", record.run_id, "--json")
    shown_text = crm.cli("show", record.run_id)
    runs = crm.cli("runs")
    debug = crm.cli("debug", record.run_id)
    site = crm.cli("review", "build", "--out", str(tmp_path / "site"))
    for result in (shown_json, shown_text, runs, debug, site):
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
    assert "${env.CRM_TOKEN}" in shown_json.output

    # MLflow's own records of the run and its steps
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=crm.tracking_uri)
    runs_of = client.search_runs([record.mlflow_experiment_id])
    assert len(runs_of) == 3  # the run and its two steps
    for run in runs_of:
        assert SECRET not in json.dumps([run.data.params, run.data.tags, list(run.data.metrics)])
    step_run = client.get_run(pull.mlflow_run_id)
    assert step_run.data.params["token"] == "${env.CRM_TOKEN}"
    assert step_run.data.tags["scrap.leaked"] == f"sent {MASK}"

    # a rerun reads the secret from the environment again
    rerun = crm.cli_process("rerun", record.run_id)
    assert rerun.returncode == 1, rerun.stderr
    again = next(r for r in RunStore(load_config(crm.config).stores.runs).list() if r.run_id != record.run_id)
    assert again.steps["pull"].scraps["token_sha256"] == pull.scraps["token_sha256"]

    # and every byte on disk: run store, logs, MLflow's database and artifacts, the debug copy, the site
    assert (crm.home / "debug").is_dir() and (tmp_path / "site").is_dir()
    for root in (crm.home, crm.root, tmp_path / "site"):
        assert files_holding(root, SECRET.encode()) == []


@pytest.mark.parametrize(
    ("parameters", "environment", "expected"),
    [
        ({"token": "hunter2-literal"}, {}, "parameters cell marks this parameter secret: pass it as ${env.NAME}"),
        ({"token": "${env.CRM_TOKEN}"}, {}, "the environment variable CRM_TOKEN is not set"),
        ({"token": "${env.CRM_TOKEN}"}, {"CRM_TOKEN": "abc"}, "CRM_TOKEN holds 3 characters"),
        ({"batch": "${env.CRM_TOKEN}"}, {"CRM_TOKEN": SECRET}, "a secret is text; the parameters cell declares int"),
        ({"hosts": ["${env.CRM_TOKEN}"]}, {"CRM_TOKEN": SECRET}, "may only stand in a text value"),
    ],
    ids=["literal-for-secret", "unset", "too-short", "not-text", "inside-a-list"],
)
def test_a_secret_given_the_wrong_way_is_refused_before_any_kernel(project, monkeypatch, parameters, environment,
                                                                   expected):
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    notebook = write_notebook(project.root / "n.ipynb", 'token = ""  # secret\nbatch = 10\nhosts = []', "pass")
    project.write({"sync": {"steps": {"only": {"notebook": notebook, "parameters": parameters}}}})
    result = project.cli("run", "sync")
    assert result.exit_code == 2, result.output
    assert expected in result.output and SECRET not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert RunStore(load_config(project.config).stores.runs).list() == []


def test_validate_does_not_need_the_secret_set_but_run_does(project, monkeypatch):
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    notebook = write_notebook(project.root / "n.ipynb", 'token = ""  # secret', "pass")
    project.write({"sync": {"steps": {"only": {"notebook": notebook, "parameters": {"token": "${env.CRM_TOKEN}"}}}}})
    assert project.cli("validate").exit_code == 0
    assert project.cli("run", "sync").exit_code == 2


def test_credentials_in_the_tracking_url_are_masked_in_messages_and_records(project, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = "pw-Zr81-do-not-show"
    monkeypatch.setenv("RUNNER_TRACKING_URI", f"http://bob:{password}@127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    notebook = write_notebook(project.root / "n.ipynb", "x = 1", "pass")
    project.write({"sync": {"steps": {"only": {"notebook": notebook}}}})
    result = project.cli_process("run", "sync", timeout=120)
    assert result.returncode != 0
    assert password not in result.stdout + result.stderr
    assert f"http://{MASK}@127.0.0.1:{port}" in result.stderr
    assert files_holding(project.home, password.encode()) == []


def test_strip_userinfo_masks_credentials_and_keeps_references():
    assert strip_userinfo("see postgresql://svc:pw@db/crm and s3://KEY:SECRET@bucket/x") == \
        f"see postgresql://{MASK}@db/crm and s3://{MASK}@bucket/x"
    assert strip_userinfo("http://alice@host/x", mask="") == "http://host/x"
    assert strip_userinfo("postgresql://svc:${env.PW}@db/crm") == "postgresql://svc:${env.PW}@db/crm"
    assert strip_userinfo("mail bob@example.com, not a URL") == "mail bob@example.com, not a URL"


def test_kernel_source_builds_each_secret_from_the_environment(monkeypatch):
    monkeypatch.setenv("PW", "s3cr3t-value")
    source = kernel_source({"dsn": "postgresql://svc:${env.PW}@db/crm", "token": "${env.PW}"})
    scope: dict = {}
    exec(source, scope)  # noqa: S102 - the code the kernel runs
    assert scope["dsn"] == "postgresql://svc:s3cr3t-value@db/crm" and scope["token"] == "s3cr3t-value"
    assert "s3cr3t-value" not in source


def test_the_redactor_masks_the_longest_secret_first():
    redactor = Redactor(["abcd", "abcdef"])
    assert redactor.text("x abcdef y abcd") == f"x {MASK} y {MASK}"
    assert redactor.value({"k abcd": ["abcdef", 3]}) == {f"k {MASK}": [MASK, 3]}
