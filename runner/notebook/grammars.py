"""What a process that runs notebooks does before it imports them: put off jsonschema's IRI grammars."""

# Run in kernels as source (a kernel's environment need not have the runner) and, through exec, in the runner's
# own processes: see defer_iri_grammars.
DEFER_IRI_GRAMMARS = """\
import sys as _sys
def _defer_iri_grammars(sys=_sys):
    import importlib, importlib.util, types
    if "rfc3987_syntax" in sys.modules or importlib.util.find_spec("rfc3987_syntax") is None:
        return
    stand_in = types.ModuleType("rfc3987_syntax")
    def real():
        if sys.modules.get("rfc3987_syntax") is stand_in:
            del sys.modules["rfc3987_syntax"]
        return importlib.import_module("rfc3987_syntax")
    stand_in.is_valid_syntax = lambda term, value: real().is_valid_syntax(term, value)
    def attribute(name):  # the import system's own questions (__path__, __spec__...) must not load it
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real(), name)
    stand_in.__getattr__ = attribute
    sys.modules["rfc3987_syntax"] = stand_in
_defer_iri_grammars()
del _sys, _defer_iri_grammars
"""


def defer_iri_grammars() -> None:
    """Put off building ``rfc3987_syntax``'s Lark grammars until an IRI is checked.

    jsonschema imports that module for its ``iri`` formats, and it builds some 35 grammars at import: about 1.8 s
    of CPU in every process that imports nbformat, papermill, nbconvert or scrapbook (jsonschema issue #1428),
    though no notebook schema has an IRI. A stand-in module takes its place; the first IRI checked imports the
    real one, so jsonschema keeps every format. The runner's own processes call this first thing, and kernels run
    :data:`DEFER_IRI_GRAMMARS` before their preloads.
    """
    exec(DEFER_IRI_GRAMMARS, {})
