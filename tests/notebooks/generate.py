"""Regenerate the tiny test notebooks: python tests/notebooks/generate.py tests/notebooks"""
import sys
import nbformat
from nbformat.v4 import new_notebook, new_code_cell, new_markdown_cell

OUT = sys.argv[1]
META = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}}

def nb(name, title, cells):
    book = new_notebook(metadata=META)
    book.cells = [new_markdown_cell(f"# {title}")]
    for c in cells:
        if isinstance(c, tuple):
            cell = new_code_cell(c[1]); cell.metadata["tags"] = [c[0]]
        else:
            cell = new_code_cell(c)
        book.cells.append(cell)
    for index, cell in enumerate(book.cells):
        cell.id = f"{name}-{index}"  # stable ids keep regenerated notebooks diff-free
    nbformat.write(book, f"{OUT}/{name}.ipynb")

P = "parameters"
nb("ok", "ok: runs cleanly and glues what it received", [
    (P, 'x = 1\nname = "world"\nratio = 0.5\nflag = False\nitems = [1, 2]\noptions = {"a": 1}\nas_of = "2026-01-01"'),
    "import os\nimport sys\nimport scrapbook as sb",
    'sb.glue("result", x * 2)\nsb.glue("name_seen", name)\nsb.glue("ratio_seen", ratio)\nsb.glue("flag_seen", flag)\n'
    'sb.glue("items_seen", items)\nsb.glue("options_seen", options)\nsb.glue("as_of_seen", as_of)',
    'sb.glue("env_run_id", os.environ.get("RUNNER_RUN_ID", ""))\nsb.glue("python", sys.executable)\nsb.glue("cwd", os.getcwd())',
])
nb("broken", "broken: the third code cell raises", [
    (P, "x = 1"),
    "y = x + 1\nprint(y)",
    'raise ValueError(f"boom with x={x}")',
    'print("never reached")',
])
nb("no_parameters", "no_parameters: has no cell tagged parameters", [
    "x = 1",
    "print(x)",
])
nb("kernel_dies", "kernel_dies: the kernel process exits in the middle of a cell", [
    (P, "x = 1"),
    "import os\nos._exit(1)",
    'print("never reached")',
])
nb("hangs", "hangs: sleeps for as long as it is told", [
    (P, "seconds = 600"),
    "import time\ntime.sleep(seconds)",
    'print("woke up")',
])
nb("glues_values", "glues_values: glues values of every JSON kind", [
    (P, "base = 2"),
    "import scrapbook as sb",
    'sb.glue("number", base * 21)\nsb.glue("fraction", base / 8)\nsb.glue("label", "champion")\n'
    'sb.glue("ok", True)\nsb.glue("sizes", [base, base * 2])\nsb.glue("info", {"base": base})\n'
    'sb.glue("model_uri", f"models:/demo/{base}")',
])
nb("uses_upstream", "uses_upstream: takes values that upstream steps glued", [
    (P, 'model_uri = ""\nnumber = 0'),
    "import scrapbook as sb",
    'sb.glue("echo_uri", model_uri)\nsb.glue("echo_number", number)\nsb.glue("number_type", type(number).__name__)',
])
nb("logs_to_mlflow", "logs_to_mlflow: logs into the step's MLflow run", [
    (P, "value = 1.5"),
    'import os\nimport mlflow\nimport scrapbook as sb\nsb.glue("env_mlflow_run_id", os.environ.get("MLFLOW_RUN_ID", ""))',
    'with mlflow.start_run() as run:\n    mlflow.log_metric("inside_metric", value)\n    mlflow.log_param("inside_param", "yes")\n'
    'sb.glue("mlflow_run_id_seen", run.info.run_id)',
])
nb("plots", "plots: draws an image that the HTML page must embed", [
    (P, "points = 5"),
    "import base64\nfrom IPython.display import Image, display\n"
    "png = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==')\n"
    "display(Image(data=png))",
])
nb("dies_once", "dies_once: the kernel dies on the first attempt (a marker file remembers it), then succeeds", [
    (P, 'marker = "attempted"'),
    "import os\nimport scrapbook as sb\nfirst = not os.path.exists(marker)\nopen(marker, 'a').write('x')",
    "if first:\n    os._exit(1)",
    'sb.glue("attempts_seen", len(open(marker).read()))',
])
nb("fails_unless", "fails_unless: raises until a file exists (a fix the test makes between runs)", [
    (P, 'needs = "fixed"\nx = 1'),
    "import os\nimport scrapbook as sb",
    'if not os.path.exists(needs):\n    raise RuntimeError(f"{needs} is missing")\nsb.glue("fixed_x", x)',
])
nb("displays_data", "displays_data: shows data holding markup through every display path of a notebook", [
    (P, "level = \"<b>a level</b>\"  # a category level as the data has it\nextra = \"<i>another</i>\""),
    "import pandas as pd\nimport scrapbook as sb\nfrom IPython.display import HTML, display\n\n"
    "from runner import monitoring, nb\n\npd.set_option(\"display.max_colwidth\", None)  # reasons in full",
    # a monitoring reason quoting the levels, in the banner of the notebook API
    'reference = pd.DataFrame({"colour": ["red", "blue"] * 40})\n'
    'batch = pd.DataFrame({"colour": ["red", level, extra] * 40})\n'
    'findings = monitoring.compare(monitoring.profile(reference, [], ["colour"]), batch,\n'
    '                              limits={"colour": {"levels": ["red", "blue"]}})\n'
    'reasons = monitoring.reasons(findings)\n'
    'display(nb.banner(monitoring.status(findings), f"colours: {level}", reasons))',
    # rows refused by the data dictionary, with their reasons: pandas' own HTML
    'valid, rejected = nb.split_valid("things", pd.DataFrame({"thing_id": ["t1", "t2"], "colour": ["red", level]}))\n'
    "rejected",
    # levels as column names, in a Styler told to escape values and labels
    'counts = batch.value_counts("colour").to_frame("rows").T\n'
    'counts.style.format(escape="html").format_index(escape="html", axis=1).set_table_attributes(\'class="levels"\')',
    # what a careless author writes: the page itself must keep it from running
    'display(HTML(f\'<div id="unescaped">{level}{extra}</div>\'))',
    # an image, which the page's policy must still show
    "import base64\nfrom IPython.display import Image\n"
    "display(Image(data=base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==')))",
    'sb.glue("level", level)\nsb.glue("reasons", reasons)\nsb.glue("rows_rejected", len(rejected))',
])
nb("writes_slowly", "writes_slowly: opens a predictions write, says so in a file, and sleeps inside it", [
    (P, 'seconds = 8.0\nmarker = ""\nrows = 5\nmodel_name = "slow_model"\nmodel_version = "1"'),
    "import os\nimport subprocess\nimport sys\nimport time\n\nimport pandas as pd\n\nfrom runner import nb",
    "def chunks():\n"
    '    yield pd.DataFrame({"entity_id": [f"a{i}" for i in range(rows)], "score": [0.25] * rows})\n'
    "    # The first chunk is written, uncommitted. A helper process of the kernel lives as long as the write.\n"
    '    helper = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds} * 5)"])\n'
    "    if marker:\n"
    '        with open(marker + ".tmp", "w") as out:\n'
    '            out.write(f"{os.getpid()} {helper.pid} {time.time()}")\n'
    '        os.replace(marker + ".tmp", marker)\n'
    "    time.sleep(seconds)\n"
    "    helper.kill()\n"
    '    yield pd.DataFrame({"entity_id": [f"b{i}" for i in range(rows)], "score": [0.75] * rows})\n\n\n'
    "written = nb.write_predictions(chunks(), model_name, model_version)",
    'nb.glue("written", written)',
])
nb("scores_then_fails", "scores_then_fails: writes the month's predictions, then raises until a file exists", [
    (P, 'needs = "fixed"\nrows = 5\nmodel_name = "m"\nmodel_version = "1"'),
    "import os\n\nimport pandas as pd\n\nfrom runner import nb",
    'scores = pd.DataFrame({"entity_id": [f"e{i}" for i in range(rows)], "score": [0.5] * rows})\n'
    "written = nb.write_predictions(scores, model_name, model_version)\n"
    'nb.glue("written", written)',
    'if not os.path.exists(needs):\n    raise RuntimeError(f"{needs} is missing")',
])
nb("saves_model", "saves_model: trains a tiny classifier and registers it with nb.save_model", [
    (P, 'model_name = "tiny"\nrows = 200\nseed = 0\nnoise = 1.0'),
    "import numpy as np\nimport pandas as pd\nfrom sklearn.linear_model import LogisticRegression\n\nfrom runner import nb",
    "def data(seed):\n    rng = np.random.default_rng(seed)\n"
    '    X = pd.DataFrame({"signal": rng.normal(size=rows), "other": rng.normal(size=rows)})\n'
    '    y = (X["signal"] + rng.normal(scale=noise, size=rows) > 0).astype(int)\n    return X, y\n\n\n'
    "X, y = data(seed)\nholdout = data(seed + 1000)\nmodel = LogisticRegression().fit(X, y)",
    'decision = nb.save_model(model, model_name, X, holdout, reference=X)\n'
    'nb.glue("auc", round(float(decision["value"]), 6))\ndecision',
])
