"""YAML pipelines: reading a file, checking it, and the :class:`Flow` it becomes.

``load_pipeline`` reads a file with PyYAML's safe loader, checks it against the schema
(collecting every problem, each with file, line, step and the closest valid key or name),
and builds an ordinary :class:`Flow`: one engine, not two. Step kinds:

- ``run:`` a command. The template is split into arguments first and each argument is
  rendered afterwards, so a value can never inject shell syntax (``shell: true`` opts into
  a shell, with every value quoted). The value is stdout, stripped.
- ``uses: "module:function"`` and ``type: NAME`` (registered with ``@step_type``, a
  plugin module, or the ``layerflow.step_types`` entry-point group). The function's
  signature is the step's schema: it gets ``input`` (the ``input_from`` value), every key
  of ``params``, and every other key of the step that it names.
- ``type: parallel_group`` with ``steps:``, and its own ``max_workers``, ``fail_fast``
  and ``timeout`` (for the whole group).

A file in ai-content-pipeline's own format (it says ``format: ai-content-pipeline``, or its
shape says so: :func:`acp.reason`) is read as that project reads it: its input from
``prompt``/``input_image``/``input_video``, each step fed what the one before passes on,
``step_N_TYPE`` names, groups with ``params: {parallel_steps, max_workers, merge_strategy}``
(the rules are in ``acp.py``; ``formats.py`` wires them into the flow).

Any step may carry ``foreach:`` (a step's list, a list input or a literal list): it becomes
one task with ``map=`` (over the step, the input, or the list in a private param), its
element in ``{{item}}`` and its index in ``{{index}}`` (``Task.element_index``); its
``max_workers`` is a resource pool of its own, one unit per element, as a group's is. ``when:``
is rendered by the step's function at run time, which raises ``lf.Skip`` when it is false.

The modules, one concept each: ``reading`` (YAML with lines), ``problems``, ``schema``,
``settings``, ``formats``, ``imports``, ``steps``, ``steptypes``, ``templates``,
``references``, ``build``, ``pipeline`` (the ``Pipeline`` class), ``commands`` (``run:``
steps) and ``loader`` (which runs the others in order).
"""

from ..errors import CommandFailed, PipelineError
from .commands import stop_commands
from .imports import on_import_path
from .loader import load_pipeline
from .pipeline import Pipeline
from .steptypes import step_type, step_types

__all__ = [
    "CommandFailed",
    "Pipeline",
    "PipelineError",
    "load_pipeline",
    "on_import_path",
    "step_type",
    "step_types",
    "stop_commands",
]
