#!/usr/bin/python3
"""Reference chat-template renderer for inferd's template tests.

Renders with jinja2 configured exactly as Hugging Face transformers'
apply_chat_template does: ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True) with the loopcontrols extension and an extension that
renders {% generation %} blocks as their body (transformers' AssistantTracker),
transformers' tojson filter (json.dumps, ensure_ascii=False) and its globals
raise_exception and strftime_now. INFERD_TEST_NOW (seconds since the epoch)
fixes the clock for strftime_now, as inferd honours it too.

Usage: render_ref.py JOBS.json RESULTS.json
  JOBS.json:    {"templates": {"id": "source", ...},
                 "jobs": [{"t": "id", "vars": {...}}, ...]}
  RESULTS.json: [{"ok": true, "out": "..."} | {"ok": false, "error": "..."}, ...]
All renders run in this one process to keep the test fast.
"""
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationBlocks(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %} renders its body (as transformers)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    @jinja2.pass_eval_context
    def _generation_support(self, context, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    fixed = os.environ.get("INFERD_TEST_NOW")
    now = datetime.fromtimestamp(int(fixed)) if fixed else datetime.now()
    return now.strftime(format)


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlocks, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    env = make_env()
    compiled = {}
    for tid, src in spec["templates"].items():
        try:
            compiled[tid] = env.from_string(src)
        except Exception as e:  # noqa: BLE001 - any failure is a result
            compiled[tid] = e
    results = []
    for job in spec["jobs"]:
        t = compiled[job["t"]]
        if isinstance(t, Exception):
            results.append({"ok": False, "error": "%s: %s" % (type(t).__name__, t)})
            continue
        try:
            results.append({"ok": True, "out": t.render(**job["vars"])})
        except Exception as e:  # noqa: BLE001
            results.append({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=True)


if __name__ == "__main__":
    main()
