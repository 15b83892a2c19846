"""The data dictionary: each column's type, range, levels, PII flag, owner and allowed purposes.

``data/dictionary.yaml`` is loaded into frozen pydantic objects. A table's entry becomes a pandera
schema to validate frames with, and is asked before a column is read for a purpose. SQL text a read
carries (a ``where=`` condition, a query) is parsed with sqlglot to find every table and column it
uses (:func:`parse_condition`, :func:`parse_query`): the purpose rule checks what SQL names, never
trusts it. Types and the pandas dtypes frames get (on validation and when read from the warehouse):

=========  ====================================================================
int        ``int64`` (``Int64`` when nullable)
float      ``float64``
string     ``str``; optional ``pattern`` (a regular expression every value matches)
category   ``str`` (not pandas' Categorical); ``levels`` required, values must be one of them
bool       ``bool`` (``boolean`` when nullable)
date       ``datetime64[ns]`` at midnight (ISO date strings are accepted and converted)
datetime   ``datetime64[ns]``, naive UTC
=========  ====================================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runner.config import invalid, read_yaml
from runner.errors import ConfigError, DataContractError

ANY = "any"  # in allowed_purposes: every purpose may use the column
REFERENCE = "the data dictionary reference, docs/reference/dictionary.md"
MAX_EXAMPLES = 5
CHECK_NAMES = {  # pandera's names for frame-level checks, said plainly
    "column_in_schema": "column not declared in the dictionary",
    "column_in_dataframe": "declared column missing from the frame",
    "multiple_fields_uniqueness": "duplicate key",
}

ColumnType = Literal["int", "float", "string", "category", "bool", "date", "datetime"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnSpec(_Frozen):
    """A column: its type, meaning, allowed values, PII flag, owner and the purposes it may be used for."""

    type: ColumnType = Field(description="int, float, string, category, bool, date or datetime")
    description: str = Field(description="what the column holds, in a sentence")
    nullable: bool = Field(description="whether values may be missing")
    pii: bool = Field(description="whether the column holds personal data")
    owner: str = Field(description="who answers for the column; inherited from the table when not given")
    allowed_purposes: tuple[str, ...] = Field(
        min_length=1, description="purposes (from 'purposes') the column may be read for, or 'any'")
    min: int | float | None = Field(None, description="smallest allowed value (int and float columns)")
    max: int | float | None = Field(None, description="largest allowed value (int and float columns)")
    levels: tuple[str, ...] | None = Field(None, description="the allowed values (category columns; required)")
    pattern: str | None = Field(None, description="a regular expression every value matches (string columns)")
    rule: str = Field("", description="why a purpose is refused; shown when it is")

    @model_validator(mode="after")
    def _options_fit_type(self) -> ColumnSpec:
        if self.type == "category" and not self.levels:
            raise ValueError("a category column needs 'levels'")
        if self.levels is not None and self.type != "category":
            raise ValueError("'levels' is only for category columns")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError("'min' and 'max' are only for int and float columns")
        if self.pattern is not None and self.type != "string":
            raise ValueError("'pattern' is only for string columns")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}): no value could fit")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        return self

    @property
    def dtype(self) -> str:
        """The pandas dtype of the column's values."""
        return {
            "int": "Int64" if self.nullable else "int64",
            "float": "float64",
            "string": "str",
            "category": "str",
            "bool": "boolean" if self.nullable else "bool",
            "date": "datetime64[ns]",
            "datetime": "datetime64[ns]",
        }[self.type]

    def allows(self, purpose: str) -> bool:
        return ANY in self.allowed_purposes or purpose in self.allowed_purposes


class TableSpec(_Frozen):
    """A table: what it holds, who owns it, its key and every column."""

    description: str = Field(description="what one row is, in a sentence")
    owner: str | None = Field(None, description="who answers for the table; its columns' owner unless they name one")
    key: tuple[str, ...] = Field((), description="columns identifying a row; rows written again with a known key "
                                 "replace the old ones")
    columns: dict[str, ColumnSpec] = Field(min_length=1, description="every column, by name")

    @model_validator(mode="before")
    @classmethod
    def _columns_inherit_owner(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("owner") and isinstance(data.get("columns"), dict):
            columns = {
                name: {"owner": data["owner"], **column} if isinstance(column, dict) else column
                for name, column in data["columns"].items()
            }
            data = {**data, "columns": columns}
        return data

    @model_validator(mode="after")
    def _key_is_declared(self) -> TableSpec:
        missing = [name for name in self.key if name not in self.columns]
        if missing:
            raise ValueError(f"key column(s) {missing} are not among the table's columns")
        return self


class _DictionaryFile(_Frozen):
    """The data dictionary: the purposes data may be used for, and every table and column."""

    purposes: dict[str, str] = Field(description="each purpose a pipeline may declare, with what it means")
    tables: dict[str, TableSpec] = Field(description="every table, by name")


@dataclass(frozen=True)
class DataDictionary:
    """The declared tables and purposes; validates frames and refuses columns for a purpose."""

    purposes: Mapping[str, str]
    tables: Mapping[str, TableSpec]
    source: str = ""
    _schemas: dict = field(default_factory=dict, compare=False, repr=False)  # (table, columns) -> pandera schema

    @classmethod
    def load(cls, path: str | Path) -> DataDictionary:
        """Read ``path``; every problem is a :class:`ConfigError` naming the file and the key."""
        source = str(path)
        try:
            raw = read_yaml(path)  # not UTF-8, not YAML, a key given twice: one ConfigError with the line
        except FileNotFoundError:
            raise ConfigError(f"file not found; create it (see {REFERENCE}; `runner schema dictionary` prints its "
                              "JSON Schema) or fix the 'dictionary' key in runner.yaml", source) from None
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "") -> DataDictionary:
        if not isinstance(raw, dict):
            raise ConfigError("expected a mapping with 'purposes' and 'tables'", source)
        try:
            parsed = _DictionaryFile.model_validate(raw)
        except ValidationError as exc:
            raise invalid(exc, source, REFERENCE) from None
        for table, spec in parsed.tables.items():
            for name, column in spec.columns.items():
                unknown = [p for p in column.allowed_purposes if p != ANY and p not in parsed.purposes]
                if unknown:
                    raise ConfigError(
                        f"unknown purpose(s) {unknown}; declare them under 'purposes' or use one of "
                        f"{sorted(parsed.purposes) + [ANY]}",
                        source, f"tables.{table}.columns.{name}.allowed_purposes",
                    )
        return cls(purposes=parsed.purposes, tables=parsed.tables, source=source)

    def table(self, table: str) -> TableSpec:
        if table not in self.tables:
            raise DataContractError(
                f"table {table!r} is not declared in the data dictionary {self._where}; declare its columns "
                f"(type, description, nullable, pii, allowed_purposes; see {REFERENCE}) before using it; "
                f"declared: {sorted(self.tables)}"
            )
        return self.tables[table]

    def schema(self, table: str, columns: list[str] | None = None):
        """A pandera ``DataFrameSchema`` of ``table`` (or of some of its columns); strict, coercing. Built once
        per table and columns (a served model validates every request with the same one)."""
        names = tuple(self.table(table).columns) if columns is None else tuple(columns)
        cached = self._schemas.get((table, names))
        if cached is None:
            cached = self._schemas[(table, names)] = self._build_schema(table, list(names))
        return cached

    def _build_schema(self, table: str, names: list[str]):
        pa = _pandera()
        spec = self.table(table)
        self.check_declared(table, names)
        key = list(spec.key) if spec.key and set(spec.key) <= set(names) else None
        return pa.DataFrameSchema(
            {name: _column_schema(pa, spec.columns[name]) for name in names},
            strict=True, unique=key, report_duplicates="exclude_first", name=table,
        )

    def validate(self, table: str, frame: pd.DataFrame) -> pd.DataFrame:
        """The frame with the dictionary's dtypes; :class:`DataContractError` listing every failure."""
        validated, failures = self._check(table, frame)
        if failures is not None:
            raise self._contract_error(table, summarize(_deduplicate(failures)))
        return validated

    def split_valid(self, table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(rows that fit, validated; rows that do not, as given plus a ``reason`` column).

        A problem of the whole frame (a missing or undeclared column) still raises.
        """
        frame = frame.reset_index(drop=True)
        validated, failures = self._check(table, frame)
        if failures is None:
            return validated, frame.iloc[:0].assign(reason=pd.Series(dtype="str"))
        failures = _deduplicate(failures)
        if failures["index"].isna().any():
            raise self._contract_error(table, summarize(failures))
        failures = failures.assign(reason=failures["column"].astype(str) + ": " + failures["check"].astype(str))
        reasons = failures.groupby(failures["index"].astype(int))["reason"].agg(lambda r: "; ".join(dict.fromkeys(r)))
        rejected = frame.loc[reasons.index].assign(reason=reasons.to_numpy())
        return self.validate(table, frame.drop(index=reasons.index)), rejected

    def row_problems(self, table: str, frame: pd.DataFrame) -> dict[int, list[str]]:
        """What breaks ``table``'s declaration of the columns ``frame`` has, by row position, in words:
        ``{3: ["visits: -2 is below the minimum 0"]}``; empty when every row fits.

        The checks of :meth:`validate` (types, nulls, ranges, levels, patterns, dates without a time of day),
        made value by value in Python instead of through pandera: a served model checks every request, mostly of
        one row, where pandera's set-up costs milliseconds (tests compare the two verdicts row by row)."""
        spec = self.table(table)
        self.check_declared(table, frame.columns)
        found: dict[int, list[str]] = {}
        for name, values in frame.reset_index(drop=True).to_dict(orient="list").items():
            column = spec.columns[name]
            for row, value in enumerate(values):
                if (why := _value_problem(value, column)) is not None:
                    found.setdefault(row, []).append(f"{name}: {why}")
        return dict(sorted(found.items()))

    def check_purpose(self, table: str, columns: Iterable[str], purpose: str) -> None:
        """Refuse (:class:`DataContractError`) any column whose allowed purposes exclude ``purpose``."""
        spec = self.table(table)
        if purpose not in self.purposes:
            raise DataContractError(f"unknown purpose {purpose!r}; known: {sorted(self.purposes)} "
                                    f"(the 'purposes' of {self._where})")
        names = list(columns)
        self.check_declared(table, names)
        refused = [
            f"{table}.{name} may be used for {list(spec.columns[name].allowed_purposes)} only, not for {purpose!r}"
            + (f" ({spec.columns[name].rule})" if spec.columns[name].rule else "")
            for name in names if not spec.columns[name].allows(purpose)
        ]
        if refused:
            raise DataContractError("; ".join(refused) + "; leave these columns out of the request")

    def check_declared(self, table: str, names: Iterable[str]) -> None:
        """Refuse (:class:`DataContractError`) any of ``names`` that ``table`` does not declare."""
        undeclared = [name for name in names if name not in self.table(table).columns]
        if undeclared:
            raise DataContractError(f"{table} column(s) {undeclared} are not declared in the data dictionary "
                                    f"{self._where}; declare them before using them")

    def pii_columns(self, table: str) -> list[str]:
        return [name for name, column in self.table(table).columns.items() if column.pii]

    def conform(self, table: str, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (e.g. as read from SQL) with the dictionary's dtypes on its declared columns."""
        columns = self.table(table).columns
        converted = {name: _as_dtype(frame[name], columns[name]) for name in frame.columns if name in columns}
        return frame.assign(**converted) if converted else frame

    @property
    def _where(self) -> str:
        return self.source or "data/dictionary.yaml"

    def _check(self, table: str, frame: pd.DataFrame):
        """(validated frame, None) or (frame, failure cases: ``column``, ``check``, ``failure_case``, ``index``)."""
        pa = _pandera()
        cut = self.fractions(table, frame)
        try:
            validated = self.schema(table).validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases[list(cut.columns)]
            return frame, cases if cut.empty else pd.concat([cases, cut], ignore_index=True)
        return (validated, None) if cut.empty else (frame, cut)

    def fractions(self, table: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Failure cases (as pandera's, a failed conversion) of numbers with a fraction in ``table``'s int columns.

        pandera converts a float column to an int one as numpy does, cutting 2.5 to 2; the dictionary refuses it,
        as :meth:`row_problems` does value by value."""
        cases = []
        for name, column in self.table(table).columns.items():
            if column.type != "int" or name not in frame.columns:
                continue
            values = frame[name]
            if values.dtype == object:
                values = values.map(lambda value: value if isinstance(value, (float, np.floating)) else np.nan)
            elif not pd.api.types.is_float_dtype(values.dtype):
                continue
            numbers = values.to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                cut = np.isfinite(numbers) & (numbers != np.trunc(numbers))
            if cut.any():
                cases.append(pd.DataFrame({"column": name, "check": f"coerce_dtype('{column.dtype}')",
                                           "failure_case": numbers[cut], "index": frame.index[cut]}))
        return (pd.concat(cases, ignore_index=True) if cases else
                pd.DataFrame({name: pd.Series(dtype=object) for name in ("column", "check", "failure_case", "index")}))

    def _contract_error(self, table: str, failures: list[dict]) -> DataContractError:
        parts = []
        for f in failures:
            if not f["count"]:
                parts.append(f"{f['column']}: {f['check']}")
                continue
            examples = ", ".join(_show(v) for v in f["examples"])
            shown = f" (e.g. {examples})" if examples else ""
            parts.append(f"{f['column']}: {f['check']} failed for {f['count']} rows{shown}")
        error = DataContractError(f"{table} breaks the data dictionary: {'; '.join(parts)}; "
                                  f"fix the data or update {self._where}")
        error.failures = failures
        return error


def summarize(failure_cases: pd.DataFrame) -> list[dict]:
    """One dict per (column, check): ``column``, ``check``, ``count`` of failing rows, ``examples``."""
    grouped = failure_cases.groupby(["column", "check"], sort=False, dropna=False)
    summary = grouped.agg(count=("index", "nunique"), examples=("failure_case", _examples)).reset_index()
    return summary.to_dict("records")


def _deduplicate(failure_cases: pd.DataFrame) -> pd.DataFrame:
    """Failure cases with frame-level checks named by their column, and without repeats.

    pandera reports a value that cannot be converted as a failed conversion, a wrong dtype and
    errors of the column's checks (which then compare against unconverted values), and a missing
    value in a non-nullable column also as a failed conversion: keep the one clear report.
    """
    fc = failure_cases[["column", "check", "failure_case", "index"]].copy()
    frame_level = fc["check"].isin(["column_in_schema", "column_in_dataframe"])
    fc.loc[frame_level, "column"] = fc.loc[frame_level, "failure_case"]
    fc["check"] = fc["check"].astype(str).replace(CHECK_NAMES)
    conversion = fc["check"].str.startswith("coerce_dtype")
    unconverted = fc["column"].isin(fc.loc[conversion & fc["failure_case"].notna(), "column"])
    repeat = (unconverted & ~conversion & (fc["check"] != "not_nullable")) | (conversion & fc["failure_case"].isna())
    return fc[~repeat].reset_index(drop=True)


def _examples(values: pd.Series) -> list:
    values = values.dropna()
    return [_plain(v) for v in values.drop_duplicates().head(MAX_EXAMPLES)]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _show(value: Any) -> str:
    return str(value) if isinstance(value, pd.Timestamp) else repr(value)


def _pandera():
    try:
        import pandera.pandas as pa
    except ImportError:  # pandera < 0.24
        import pandera as pa
    return pa


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "date": "a date",
          "datetime": "a date and time"}


def _value_problem(value: Any, column: ColumnSpec) -> str | None:
    """Why ``value`` does not fit ``column`` (:meth:`DataDictionary.row_problems`), or None."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None if column.nullable else "missing, but the column may not be empty"
    kind = column.type
    if kind in ("int", "float"):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return f"{value!r} is not {_KINDS[kind]}"
        if not isinstance(value, (int, float, np.integer, np.floating)) or math.isinf(value):
            return f"{value!r} is not {_KINDS[kind]}"
        if kind == "int" and not float(value).is_integer():
            return f"{value!r} is not {_KINDS[kind]}"
        if column.min is not None and value < column.min:
            return f"{value!r} is below the minimum {column.min}"
        if column.max is not None and value > column.max:
            return f"{value!r} is above the maximum {column.max}"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) or value in (0, 1) else f"{value!r} is not {_KINDS[kind]}"
    if kind in ("date", "datetime"):
        stamp = pd.to_datetime(value, errors="coerce")
        if stamp is pd.NaT or pd.isna(stamp):
            return f"{value!r} is not {_KINDS[kind]}"
        if kind == "date" and stamp != stamp.normalize():
            return f"{value!r} has a time of day; a date is expected"
        return None
    text = str(value)
    if column.levels and text not in column.levels:
        return f"{value!r} is not one of {', '.join(column.levels)}"
    if column.pattern and not re.match(column.pattern, text):
        return f"{value!r} does not match {column.pattern}"
    return None


def _column_schema(pa, column: ColumnSpec):
    checks = []
    if column.min is not None:
        checks.append(pa.Check.ge(column.min))
    if column.max is not None:
        checks.append(pa.Check.le(column.max))
    if column.levels:
        checks.append(pa.Check.isin(list(column.levels)))
    if column.pattern:
        checks.append(pa.Check.str_matches(column.pattern))
    if column.type == "date":
        checks.append(pa.Check(lambda s: s == s.dt.normalize(), name="date_without_time_of_day"))
    return pa.Column(column.dtype, checks, nullable=column.nullable, coerce=True)


def _as_dtype(values: pd.Series, column: ColumnSpec) -> pd.Series:
    if column.type in ("date", "datetime"):
        return pd.to_datetime(values, format="ISO8601").astype("datetime64[ns]")
    if column.type == "int" and values.isna().any():
        return values.astype("Int64")
    return values.astype(column.dtype)


# -- the purpose rule on SQL text ------------------------------------------------------------------
#
# A read's SQL is parsed (sqlglot, in the warehouse's dialect) to find every table and column it
# uses, and what the warehouse runs is the parsed statement written out again (without comments),
# so that what runs is what was checked, whatever the database makes of text sqlglot reads otherwise.

SQL_DIALECTS = {"postgresql": "postgres", "mssql": "tsql", "mariadb": "mysql"}  # SQLAlchemy's name: sqlglot's
# What a ``where=`` condition may hold (sqlglot's node types), and the functions it may call.
CONDITION_NODES = (
    "And", "Or", "Not", "Paren", "EQ", "NEQ", "GT", "GTE", "LT", "LTE", "NullSafeEQ", "NullSafeNEQ", "Is", "In",
    "Between", "Like", "ILike", "Escape", "Add", "Sub", "Mul", "Div", "Mod", "Neg", "DPipe", "Column", "Identifier",
    "Literal", "Boolean", "Null", "Placeholder",
)
CONDITION_FUNCTIONS = {"Lower": "lower", "Upper": "upper", "Coalesce": "coalesce", "Substring": "substr"}
CONDITION_SYNTAX = "comparisons, AND/OR/NOT, IN, BETWEEN, LIKE, IS NULL, arithmetic, literals, :named parameters"
CONDITION_ALLOWS = f"{CONDITION_SYNTAX} and {', '.join(CONDITION_FUNCTIONS.values())}"
# Functions sqlglot does not know are refused in a query (what they read cannot be seen: pg_read_file,
# query_to_xml, load_extension), except these plain scalar ones of the warehouses we run on.
KNOWN_SCALAR_FUNCTIONS = frozenset({"julianday", "printf", "total", "unixepoch"})
# Statements (or parts) that do more than read.
NOT_READS = ("DML", "DDL", "Command", "Drop", "Into", "Lock", "Pragma", "Attach", "Detach", "Set", "Transaction",
             "Commit", "Rollback", "Analyze", "Use")


@dataclass(frozen=True)
class Condition:
    """A ``where=`` condition as checked: the columns of its table it uses, and the SQL that runs."""

    sql: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Query:
    """A query as checked (:func:`parse_query`): the warehouse tables it reads, and the SQL that runs."""

    sql: str
    tables: tuple[str, ...]
    tree: Any
    dialect: str

    def columns(self, schema: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """The columns of each table the query uses anywhere (selected, joined on, filtered, grouped, in
        sub-queries); ``*`` is expanded to every column ``schema`` gives the table (its columns in the
        warehouse). :class:`DataContractError` for a column no table of the query has."""
        from sqlglot import exp
        from sqlglot.errors import SqlglotError
        from sqlglot.optimizer.qualify import qualify
        from sqlglot.optimizer.scope import traverse_scope

        try:
            qualified = qualify(self.tree.copy(), schema={t: {c: "TEXT" for c in cs} for t, cs in schema.items()},
                                dialect=self.dialect or None, validate_qualify_columns=True, quote_identifiers=False)
        except SqlglotError as exc:
            raise DataContractError(f"read_sql: {_first_line(exc)}; every column must be one of a table the query "
                                    "reads (see the data dictionary)") from None
        used: dict[str, list[str]] = {}
        for scope in traverse_scope(qualified):
            for star in scope.expression.find_all(exp.Star):
                if not isinstance(star.parent, exp.Func):
                    raise DataContractError(f"read_sql: {star.parent.sql(self.dialect or None)!r} could not be "
                                            "expanded to the columns it reads; name the columns")
            for column in scope.columns:
                source = _source(scope, column.table)
                if isinstance(source, exp.Table):
                    table = _spelled(source.name, schema)
                    used.setdefault(table, []).append(_spelled(column.name, schema.get(table, ())))
                elif source is None and column.table:
                    raise DataContractError(f"read_sql: column {column.sql(self.dialect or None)!r} names a table "
                                            "the query does not read")
        return {table: list(dict.fromkeys(names)) for table, names in used.items()}


def sql_dialect(backend: str) -> str:
    """sqlglot's dialect for a SQLAlchemy backend name (``""``, its generic SQL, when it has none)."""
    from sqlglot.dialects.dialect import Dialect

    name = SQL_DIALECTS.get(backend, backend)
    try:
        Dialect.get_or_raise(name)
    except ValueError:
        return ""
    return name


def parse_condition(where: str, table: str, dialect: str, columns: Iterable[str] = ()) -> Condition:
    """``where`` as a condition over ``table``'s own columns (see :data:`CONDITION_NODES`), or a
    :class:`DataContractError` naming what it may not hold: a sub-query, UNION/INTERSECT/EXCEPT, ``;``,
    another table's column, a function outside :data:`CONDITION_FUNCTIONS`, a positional parameter.
    The columns it uses are spelled as ``columns`` (the table's declared ones) spell them: the database
    folds the case of an unquoted name (PostgreSQL's ``GENDER`` is ``gender``), so the rule must too."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.errors import SqlglotError
    from sqlglot.tokens import TokenType

    said = f"{table}: where= {where!r}"
    try:
        tokens = Dialect.get_or_raise(dialect or None).tokenize(where)
    except SqlglotError as exc:
        raise DataContractError(f"{said} is not SQL ({_first_line(exc)})") from None
    kinds = {token.token_type for token in tokens}
    if TokenType.SEMICOLON in kinds:
        raise DataContractError(f"{said} holds ';': a condition is one expression, never several statements")
    combined = [token.text.upper() for token in tokens
                if token.token_type in (TokenType.UNION, TokenType.INTERSECT, TokenType.EXCEPT)]
    if combined:
        raise DataContractError(f"{said} holds {combined[0]}: a condition may not combine queries; read each table "
                                "with nb.load and combine the frames in pandas")
    if TokenType.SELECT in kinds:
        raise DataContractError(f"{said} holds a sub-query (SELECT): a condition may only test columns of {table}; "
                                "read the other rows with nb.load and filter in pandas")
    try:
        tree = sqlglot.condition(where, dialect=dialect or None)
    except SqlglotError as exc:
        raise DataContractError(f"{said} is not one condition ({_first_line(exc)}); it may hold "
                                f"{CONDITION_ALLOWS}") from None
    declared, used = list(columns), []
    for node in tree.walk():
        kind = type(node).__name__
        if isinstance(node, (exp.Query, exp.Subquery)):
            raise DataContractError(f"{said} holds a sub-query: a condition may only test columns of {table}")
        if isinstance(node, exp.Column):
            if node.table and node.table.lower() != table.lower() or node.args.get("db") or node.args.get("catalog"):
                raise DataContractError(f"{said} names {node.sql(dialect or None)}, a column of another table: a "
                                        f"condition may only use columns of {table}")
            if isinstance(node.this, exp.Star):
                raise DataContractError(f"{said} holds {node.sql(dialect or None)}: a condition names columns")
            used.append(_spelled(node.name, declared))
        elif isinstance(node, exp.Placeholder) and node.this is None or isinstance(node, exp.Parameter):
            raise DataContractError(f"{said} holds the parameter {node.sql(dialect or None)}: give parameters by name "
                                    "(:name, with params={'name': value})")
        elif kind in CONDITION_NODES or kind in CONDITION_FUNCTIONS:
            continue
        elif isinstance(node, exp.Func):
            raise DataContractError(f"{said} calls {_function_name(node)}(): a condition may call only "
                                    f"{', '.join(CONDITION_FUNCTIONS.values())}, besides {CONDITION_SYNTAX}")
        else:
            raise DataContractError(f"{said} holds {node.sql(dialect or None)!r} ({kind}): a condition may only hold "
                                    f"{CONDITION_ALLOWS}")
    return Condition(_written(tree, dialect), tuple(dict.fromkeys(used)))


def parse_query(sql: str, dialect: str) -> Query:
    """``sql`` as one query that only reads, with the warehouse tables it reads; a
    :class:`DataContractError` for several statements, anything but a read, a table function or a
    table of another schema, or a function sqlglot does not know (what it reads cannot be seen)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.optimizer.scope import traverse_scope

    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect or None) if s is not None]
    except SqlglotError as exc:
        raise DataContractError(f"read_sql: the query is not {dialect or 'standard'} SQL the purpose rule can read "
                                f"({_first_line(exc)}); it runs only what it has checked") from None
    if len(statements) != 1:
        raise DataContractError(f"read_sql: {len(statements)} statements; read_sql runs one SELECT")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise DataContractError(f"read_sql: {tree.key.upper()} is not a read; read_sql runs one SELECT (nb.save "
                                "writes, checked by the data dictionary)")
    not_reads = tuple(getattr(exp, name) for name in NOT_READS if hasattr(exp, name))
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    tables: list[str] = []
    for node in tree.walk():
        if isinstance(node, not_reads):
            raise DataContractError(f"read_sql: the query holds {node.key.upper()}; read_sql only reads")
        if isinstance(node, exp.Anonymous) and node.name.lower() not in KNOWN_SCALAR_FUNCTIONS:
            raise DataContractError(f"read_sql: {node.name}() is a function the SQL parser does not know, so what it "
                                    "reads cannot be checked against the purpose; use standard SQL functions, or "
                                    "nb.load and pandas")
        if isinstance(node, exp.Func) and type(node).__name__.startswith("Read"):
            raise DataContractError(f"read_sql: {_function_name(node)}() reads files, not tables of the data dictionary")
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                raise DataContractError(f"read_sql: {node.sql(dialect or None)} reads from a function, not from a "
                                        "table of the data dictionary")
            if node.args.get("db") or node.args.get("catalog"):
                raise DataContractError(f"read_sql: {node.sql(dialect or None)} names a table of another schema or "
                                        "database; only the warehouse's tables of the data dictionary are read")
            if node.name.lower() not in ctes:
                tables.append(node.name)
    for scope in traverse_scope(tree):  # a table named like a query's CTE is still read where no CTE covers it
        tables += [source.name for source in scope.sources.values() if isinstance(source, exp.Table)]
    return Query(_written(tree, dialect), tuple(dict.fromkeys(tables)), tree, dialect)


def _written(tree, dialect: str) -> str:
    """The parsed SQL written out again without comments, named parameters as ``:name`` (SQLAlchemy's)."""
    from sqlglot import exp

    plain = tree.copy().transform(
        lambda node: exp.var(f":{node.name}") if isinstance(node, exp.Placeholder) and node.this is not None else node)
    return plain.sql(dialect=dialect or None, comments=False)


def _source(scope, name: str):
    """What ``name`` (a table or alias) stands for in ``scope`` or an enclosing one: a table, a sub-query's
    scope, or None."""
    while scope is not None:
        if name in scope.sources:
            return scope.sources[name]
        scope = scope.parent
    return None


def _spelled(name: str, names: Iterable[str]) -> str:
    """``name`` as ``names`` spell it: sqlglot folds the case of unquoted identifiers as the dialect does,
    the warehouse and the dictionary keep theirs."""
    names = list(names)
    same = [other for other in names if other.lower() == name.lower()]
    return name if name in names or len(same) != 1 else same[0]


def _function_name(node) -> str:
    from sqlglot import exp

    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
