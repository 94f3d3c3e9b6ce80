"""The playbook language and what CS ops write.

This package reads the YAML that CS ops commit (playbooks, the contact policy, the health model, the sources),
validates it into typed models with every error at ``file:line:col``, and compiles it: audience
and condition expressions into SQL (and a Python evaluator that agrees with it), templates into
sandboxed Jinja, steps into a plan the engine runs. The shipped playbooks, templates, policy and
health model live beside the code, in this folder.

Everything other packages may use is listed in ``__all__``; the modules starting with ``_`` are
private to this package.
"""

from playbooks._compiler import (
    CompiledPlaybook,
    compile_file,
    compile_source,
    load_playbook,
    load_playbooks,
    playbook_files,
    validate_paths,
)
from playbooks._describe import mermaid, step_summary
from playbooks._expr import (
    AUDIENCE,
    CONTACTS,
    ENROLLMENT,
    EVENT,
    Clause,
    Env,
    Expr,
    Scope,
    check,
    clause_columns,
    clause_sql,
    compile_expression,
    env_for,
    evaluate,
    explain,
    fields_of,
    json_bool,
    json_object,
    parse,
    read_as,
    to_sql,
)
from playbooks._health import HEALTH_FILE, health_file, health_problems, load_health
from playbooks._policy import POLICY_FILE, load_policy, policy_problems
from playbooks._sources import SOURCES_FILE, load_sources, load_sources_file, sources_file, sources_problems
from playbooks._templates import TEMPLATE_VARIABLES, RenderLimits, render

__all__ = [
    "AUDIENCE",
    "CONTACTS",
    "ENROLLMENT",
    "EVENT",
    "HEALTH_FILE",
    "POLICY_FILE",
    "SOURCES_FILE",
    "TEMPLATE_VARIABLES",
    "Clause",
    "CompiledPlaybook",
    "Env",
    "Expr",
    "RenderLimits",
    "Scope",
    "check",
    "clause_columns",
    "clause_sql",
    "compile_expression",
    "compile_file",
    "compile_source",
    "env_for",
    "evaluate",
    "explain",
    "fields_of",
    "health_file",
    "health_problems",
    "json_bool",
    "json_object",
    "load_health",
    "load_playbook",
    "load_playbooks",
    "load_policy",
    "load_sources",
    "load_sources_file",
    "mermaid",
    "parse",
    "playbook_files",
    "policy_problems",
    "read_as",
    "render",
    "sources_file",
    "sources_problems",
    "step_summary",
    "to_sql",
    "validate_paths",
]
