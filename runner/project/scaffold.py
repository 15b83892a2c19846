"""``runner new``: a step's notebook made from a template, and its entry in ``runner.yaml``.

The templates are the ``.ipynb`` files in the repository's top-level ``templates/notebooks/``
(one per kind: ``ingest``, ``train``, ``score``, ``monitor``, ``backtest``; adding a kind is adding a
file, written by ``templates/generate.py``). A wheel installs them as data files
(:func:`runner.config.templates` finds them either way). In a template's cells ``{{pipeline}}`` and ``{{name}}``
are replaced by the pipeline and step names, and its metadata ``runner.template`` names its kind; its
``metadata.kernelspec`` names the project's kernel (:mod:`runner.project.authoring`), which JupyterLab opens it with.

The notebook goes to ``notebooks/<pipeline>/<name>.ipynb`` beside ``runner.yaml``, and the step
``<name>`` is appended to the pipeline, which is created (with ``purpose``) when it does not exist.
Without a pipeline name, the config's only pipeline is used. ``needs`` is set for the usual order:
a *score* step needs the pipeline's *train* steps and a *monitor* step its *score* steps, where a
step's kind is its notebook's ``runner.template`` metadata or, failing that, its name.

``runner.yaml`` is edited with ruamel.yaml's round-trip mode, so comments, key order, quoting and
indentation stay as the user wrote them; it is written atomically and loaded again to prove it is
still valid, else the original is put back. Nothing is overwritten: an existing step or notebook
is a :class:`ConfigError`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from runner.config import NAME_PATTERN, Config, config_path as resolve_config_path, load_config, templates
from runner.errors import ConfigError
from runner.project.authoring import kernelspec_metadata

TEMPLATES = templates("notebooks")
UPSTREAM_KIND = {"score": "train", "monitor": "score"}  # a step of this kind needs the pipeline's steps of that kind
PLACEHOLDERS = ("pipeline", "name", "table", "label", "model", "source", "score_step", "as_of")


def kinds() -> list[str]:
    """The template kinds available: the names of the ``.ipynb`` files in :data:`TEMPLATES`."""
    return sorted(path.stem for path in TEMPLATES.glob("*.ipynb"))


def new_notebook(
    config_path: str | Path | None,
    kind: str,
    name: str,
    pipeline: str | None = None,
    purpose: str = "analytics",
    table: str | None = None,
    label: str = "label",
    model: str | None = None,
) -> tuple[Path, str]:
    """Create ``notebooks/<pipeline>/<name>.ipynb`` from the ``kind`` template and add step ``name``.

    The template's parameters name ``table`` (default: the data dictionary's only table), its ``label``
    column and the registered ``model`` (default: the pipeline's name). Returns the notebook's path and
    the step's name. Raises :class:`ConfigError` (nothing changed) for an unknown kind, a bad name, an
    existing step or notebook, or an invalid ``runner.yaml``.
    """
    source = resolve_config_path(config_path)
    if kind not in kinds():
        raise ConfigError(f"no notebook template named {kind!r}; known: {', '.join(kinds()) or 'none'} "
                          f"(in {TEMPLATES})")
    if not re.match(NAME_PATTERN, name):
        raise ConfigError(f"step name {name!r} must match {NAME_PATTERN}; choose another NAME")
    config = load_config(source)
    pipeline = pipeline or _only_pipeline(config)
    if not re.match(NAME_PATTERN, pipeline):
        raise ConfigError(f"pipeline name {pipeline!r} must match {NAME_PATTERN}; choose another --pipeline")
    existing = config.pipelines.get(pipeline)
    if existing is not None and name in existing.steps:
        raise ConfigError(f"step {name!r} already exists; choose another NAME or remove the step first",
                          str(source), f"pipelines.{pipeline}.steps.{name}")
    relative = f"notebooks/{pipeline}/{name}.ipynb"
    notebook = config.root / relative
    if notebook.exists():
        raise ConfigError(f"{notebook} already exists; choose another NAME, or add it to runner.yaml by hand",
                          str(source), f"pipelines.{pipeline}.steps.{name}")
    needs = _needs(config, pipeline, kind)
    table = table or _only_table(config)
    found = sorted((config.root / "data").rglob(f"{table}.csv"))  # an ingest reads the table's CSV if there is one
    values = {"pipeline": pipeline, "name": name, "table": table, "label": label, "model": model or pipeline,
              "source": found[0].relative_to(config.root).as_posix() if found else f"data/{table}.csv",
              "score_step": next((step for step in needs if kind == "monitor"), "score"), "as_of": _today()}

    original = source.read_text(encoding="utf-8")
    edited = _add_step(source, original, pipeline, name, relative, needs, purpose)
    content = _notebook_text(kind, values, kernelspec_metadata(config.root))
    created_folders = [folder for folder in (notebook.parent, notebook.parent.parent) if not folder.exists()]
    notebook.parent.mkdir(parents=True, exist_ok=True)
    with open(notebook, "x", encoding="utf-8") as handle:  # "x": never overwrite, even in a race
        handle.write(content)
    try:
        _write_atomically(source, edited)
        try:
            load_config(source)
        except ConfigError as error:
            _write_atomically(source, original)
            raise ConfigError(f"adding the step made it invalid ({error.message}); the original is restored, "
                              f"add the step by hand", str(source), error.key) from error
    except BaseException:
        notebook.unlink(missing_ok=True)
        for folder in created_folders:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        raise
    return notebook, name


def _only_pipeline(config: Config) -> str:
    if len(config.pipelines) == 1:
        return next(iter(config.pipelines))
    known = ", ".join(sorted(config.pipelines)) or "none yet"
    raise ConfigError(f"which pipeline? pass --pipeline (known: {known}; a new name creates one)",
                      str(config.source), "pipelines")


def _needs(config: Config, pipeline: str, kind: str) -> list[str]:
    """The pipeline's steps of the kind a ``kind`` step usually follows (score after train, ...)."""
    upstream = UPSTREAM_KIND.get(kind)
    if upstream is None or pipeline not in config.pipelines:
        return []
    steps = config.pipelines[pipeline].steps
    return [step for step, entry in steps.items() if _kind_of(config.notebook_path(entry), step) == upstream]


def _kind_of(notebook: Path, step: str) -> str:
    """The template a notebook was made from (its ``runner.template`` metadata), else the step's name."""
    try:
        metadata = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
        return str(metadata.get("runner", {}).get("template") or step)
    except (OSError, ValueError, AttributeError):
        return step


def _today() -> str:
    import datetime as dt

    return dt.date.today().isoformat()


def _only_table(config: Config) -> str:
    """The data dictionary's only table, else a name ``runner validate`` will point at."""
    from runner.data.dictionary import DataDictionary

    try:
        tables = list(DataDictionary.load(config.dictionary).tables) if config.dictionary.is_file() else []
    except ConfigError:
        tables = []
    return tables[0] if len(tables) == 1 else "my_table"


def _notebook_text(kind: str, values: dict[str, str], kernelspec: dict[str, str]) -> str:
    """The notebook made from the ``kind`` template, its ``metadata.kernelspec`` naming the project's kernel."""
    notebook = _from_template(TEMPLATES / f"{kind}.ipynb", values)
    notebook.setdefault("metadata", {})["kernelspec"] = kernelspec
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def _from_template(template: Path, values: dict[str, str]) -> dict[str, Any]:
    """The template's JSON with every ``{{placeholder}}`` of :data:`PLACEHOLDERS` replaced in its cells."""
    notebook = json.loads(template.read_text(encoding="utf-8"))

    def fill(text: str) -> str:
        for key in PLACEHOLDERS:
            text = text.replace("{{" + key + "}}", values[key])
        return text

    for cell in notebook["cells"]:
        source = cell["source"]
        cell["source"] = fill(source) if isinstance(source, str) else [fill(line) for line in source]
    return notebook


def _add_step(source: Path, text: str, pipeline: str, name: str, notebook: str, needs: list[str],
              purpose: str) -> str:
    """``runner.yaml``'s text with the step appended (and the pipeline, if new); the rest unchanged."""
    editor = YAML()  # round-trip mode
    editor.preserve_quotes = True
    editor.width = 4096  # never re-wrap the user's long lines
    data = editor.load(text)
    pipelines = data["pipelines"]
    # Keep the file's indentation: one level is where the first pipeline's name starts; block
    # sequences (if the file has any) as ruamel.yaml guesses them.
    mapping = pipelines.lc.col if len(pipelines) and not pipelines.fa.flow_style() else 2
    _, sequence, offset = load_yaml_guess_indent(text)
    editor.indent(mapping=mapping, sequence=mapping if offset is None else sequence, offset=offset or 0)

    step = _flow(CommentedMap(notebook=notebook))
    if needs:
        step["needs"] = _flow(CommentedSeq(needs))
    new_pipeline = pipeline not in pipelines
    if new_pipeline:
        entry = CommentedMap(purpose=purpose, steps=CommentedMap({name: step}))
        _append(pipelines, pipeline, entry)
        if not pipelines.fa.flow_style():  # comments only fit block style
            entry.yaml_add_eol_comment("what the data is used for; an allowed purpose in the data dictionary",
                                       "purpose")
            if len(pipelines) > 1:
                pipelines.yaml_set_comment_before_after_key(pipeline, before="\n")  # a blank line, as between others
    else:
        _append(pipelines[pipeline]["steps"], name, step)
    buffer = io.StringIO()
    editor.dump(data, buffer)
    edited = buffer.getvalue()

    # ruamel.yaml reads YAML 1.2, the runner (PyYAML) 1.1: prove every other key still means the same.
    before = yaml.safe_load(text)
    try:
        after = yaml.safe_load(edited)
        if new_pipeline:
            del after["pipelines"][pipeline]
        else:
            del after["pipelines"][pipeline]["steps"][name]
    except (yaml.YAMLError, LookupError, TypeError):
        after = None
    if after != before:
        raise ConfigError("editing it would change what other keys mean (YAML 1.1 spellings such as yes/no "
                          "or 010); add the step by hand", str(source))
    return edited


def _flow(node: Any) -> Any:
    node.fa.set_flow_style()
    return node


def _append(mapping: CommentedMap, key: str, value: Any) -> None:
    """``mapping[key] = value`` at the end, keeping what followed the mapping's last entry after it.

    ruamel.yaml attaches the blank lines and comments that follow a block mapping (often the
    comment heading the next section) to its deepest last value; moved as they are, they would
    land between the old last entry and the new one.
    """
    tail = ""
    if not mapping.fa.flow_style() and len(mapping):
        tail = _cut_tail(*_last_slot(mapping))
    mapping[key] = value
    if tail:
        container, slot = _last_slot(mapping)
        token = CommentToken("\n" + tail, CommentMark(0), None)
        if isinstance(container, CommentedSeq):
            container.ca.items[slot] = [token, None]
        else:
            container.ca.items[slot] = [None, None, token, None]


def _last_slot(node: CommentedMap | CommentedSeq) -> tuple[Any, Any]:
    """(container, key or index) of the last scalar or flow collection written in a block collection."""
    while True:
        slot = next(reversed(node)) if isinstance(node, CommentedMap) else len(node) - 1
        value = node[slot]
        if isinstance(value, (CommentedMap, CommentedSeq)) and len(value) and not value.fa.flow_style():
            node = value
        else:
            return node, slot


def _cut_tail(container: Any, slot: Any) -> str:
    """Remove and return what follows the end-of-line comment of ``container[slot]``."""
    entry = container.ca.items.get(slot)
    position = 0 if isinstance(container, CommentedSeq) else 2
    token = entry[position] if entry and len(entry) > position else None
    if token is None or "\n" not in token.value:
        return ""
    line, tail = token.value.split("\n", 1)
    token.value = line + "\n"
    return tail


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``."""
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            shutil.copymode(path, handle.name)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def init_project(directory: str | Path, today: str | None = None) -> list[Path]:
    """Write a working starter project into ``directory`` (created if missing) and return what was written.

    ``runner.yaml`` (commented), ``data/dictionary.yaml`` (every key shown by example), a year of
    generated example data up to ``today``'s month, the notebooks of its pipelines made from the
    templates, the JSON Schemas editors check the YAML files with, and a ``.gitignore`` for ``.runner/``.
    Nothing is overwritten: a directory that already has any of these files is a :class:`ConfigError`.
    """
    from runner.project import schemas, starter

    root = Path(directory).resolve()
    files: dict[Path, str | bytes] = {
        root / "runner.yaml": starter.RUNNER_YAML,
        root / "data" / "dictionary.yaml": starter.DICTIONARY_YAML,
        root / ".gitignore": starter.GITIGNORE,
        root / "schemas" / "runner.schema.json": schemas.path("config").read_text(encoding="utf-8"),
        root / "schemas" / "dictionary.schema.json": schemas.path("dictionary").read_text(encoding="utf-8"),
    }
    today = today or _today()
    for pipeline, step, kind in starter.STEPS:
        values = {"pipeline": pipeline, "name": step, "table": starter.TABLE, "label": starter.LABEL,
                  "model": starter.MODEL, "source": starter.SOURCE, "score_step": "score", "as_of": today}
        files[root / "notebooks" / pipeline / f"{step}.ipynb"] = _notebook_text(kind, values, kernelspec_metadata(root))
    files[root / starter.SOURCE] = starter.example_customers(today[:7]).to_csv(index=False)
    existing = [path for path in files if path.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} already exists; `runner init` only writes into a new or empty project "
                          "(choose another folder, or use `runner new KIND NAME` to add a notebook)", str(root))
    written = []
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8", newline="") as handle:  # "x": never overwrite, even in a race
                handle.write(content)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
