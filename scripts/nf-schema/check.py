"""Checks what prefect-nf's Northflank client exchanged with the emulator against the official
client's types (emulator/schema/northflank.json, made by generate.mjs).

    check.py RECORDING.jsonl [RECORDING.jsonl ...]

A recording is what the emulator writes when `NF_EMULATOR_RECORD` names a file (one JSON object
a line: method, path, query, endpoint, userAgent, status, body, response). Every exchange whose
user agent is our client's (`prefect-nf/…`) is checked:

- the request body against the endpoint's request type, every object closed
  (`additionalProperties: false`), so an unknown or misspelled field fails, and so does a
  `null` the type does not allow;
- the query parameters against those the official client sends for that endpoint, with the
  values it always sends (`queryType=range` for logs);
- a 200 answer's `data` against the endpoint's response type, and its envelope; an error
  answer against Northflank's error envelope.

Exit status 1 with one line per problem (the recording's line, the request, the field path and
the rule), 0 when everything conforms. `--allow-empty` accepts a recording with no exchange of
ours; without it an empty recording fails, since it means the recorder did not run.
"""

import argparse
import json
import re
import sys
from pathlib import Path
from urllib.parse import parse_qsl

import jsonschema
from jsonschema.exceptions import best_match

SCHEMA = Path(__file__).resolve().parents[2] / "emulator" / "schema" / "northflank.json"
OUR_AGENT = "prefect-nf/"

# Where the emulator knowingly answers other than the official types say, and why; each is
# documented in emulator/README.md ("Fidelity"). A deviation is (endpoint, field path, rule) and
# a test of the answer's `data` that must hold for it to apply.
def _open_run(data, where):
    run = data["runs"][int(where.split("[")[1].split("]")[0])] if where.startswith("runs[") else data
    return run.get("concluded") is False


KNOWN_DEVIATIONS = [
    # The types say `jobType: 'cron'` for every create/put answer, an artefact of the docs'
    # generator (the manual variant documents "manual"); the emulator answers what the job is.
    ("POST /v1/projects/{projectId}/jobs", "jobType", "must be 'cron'", lambda d, w: d.get("jobType") == "manual"),
    ("PUT /v1/projects/{projectId}/jobs", "jobType", "must be 'cron'", lambda d, w: d.get("jobType") == "manual"),
    # `concludedAt` is typed required, but a run that has not concluded has no such time: the
    # emulator leaves it out until then (rather than sending a null the type forbids).
    ("GET /v1/projects/{projectId}/jobs/{jobId}/runs/{runId}", "concludedAt", "is required", _open_run),
    ("GET /v1/projects/{projectId}/jobs/{jobId}/runs", "runs[*].concludedAt", "is required", _open_run),
]


def deviation(endpoint, where, words, data):
    generic = re.sub(r"\[\d+\]", "[*]", where)
    return any(
        e == endpoint and p == generic and r == words and holds(data, where)
        for e, p, r, holds in KNOWN_DEVIATIONS
    )


PAGE_ENVELOPE = {
    "type": "object",
    "properties": {
        "data": {},
        "pagination": {
            "type": "object",
            "properties": {
                "hasNextPage": {"type": "boolean"},
                "cursor": {"type": "string"},
                "count": {"type": "number"},
            },
            "required": ["hasNextPage", "count"],
            "additionalProperties": False,
        },
    },
    "required": ["data"],
    "additionalProperties": False,
}
ERROR_ENVELOPE = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "status": {"type": "number"},
                "message": {"type": "string"},
                "id": {"type": "string"},
                "details": {},
            },
            "required": ["message"],
            "additionalProperties": False,
        }
    },
    "required": ["error"],
    "additionalProperties": False,
}


def field_path(error, extra=None):
    parts = []
    for p in [*error.absolute_path, *([extra] if extra else [])]:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + p)
    return "".join(parts) or "(body)"


def branch_errors(error):
    """The errors of the union branch that fits best: the one declaring most of the object's
    fields (a discriminating source such as `external` decides), else jsonschema's best match."""
    branches = error.validator_value
    if isinstance(error.instance, dict):
        keys = set(error.instance)
        scores = [len(keys & set(b.get("properties", {}))) for b in branches]
        best = scores.index(max(scores))
        return [e for e in error.context if e.relative_schema_path[0] == best]
    return [best_match(error.context)]


def describe(error):
    """(field path, rule) pairs for one error, one per unknown field."""
    if error.validator == "anyOf" and error.context:
        return [pair for e in branch_errors(error) for pair in describe(e)]
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return [
            (field_path(error, extra), f"unknown field (the type allows: {', '.join(allowed)})")
            for extra in sorted(set(error.instance) - set(allowed))
        ]
    if error.validator == "type" and error.instance is None:
        return [(field_path(error), f"null is not allowed (must be {error.validator_value}; omit the field instead)")]
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return [(field_path(error, missing), "is required")]
    if error.validator == "const":
        return [(field_path(error), f"must be {error.validator_value!r}")]
    return [(field_path(error), error.message)]


VALIDATORS = {}


def problems(schema, instance, endpoint="", allow_deviations=False):
    # One validator per schema: a whole test run records thousands of exchanges.
    validator = VALIDATORS.get(id(schema))
    if validator is None:
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        VALIDATORS[id(schema)] = validator
    out = []
    for error in validator.iter_errors(instance):
        for where, words in describe(error):
            if not (allow_deviations and deviation(endpoint, where, words, instance)):
                out.append(f"{where}: {words}")
    return out


def check_exchange(entry, endpoints):
    endpoint = entry.get("endpoint", "")
    spec = endpoints.get(endpoint)
    if spec is None:
        return [f"{endpoint}: not an endpoint of the official client's types"]
    out = []
    body = entry.get("body")
    if body is not None:
        request = spec.get("request")
        if request is None:
            out.append("(body): this endpoint takes no request body")
        else:
            out += [f"request {request['type']}: {p}" for p in problems(request["schema"], body)]
    query = spec.get("query", {"parameters": [], "required": {}})
    sent = parse_qsl(entry.get("query") or "", keep_blank_values=True)
    for name, _ in sent:
        if name not in query["parameters"]:
            allowed = ", ".join(query["parameters"]) or "none"
            out.append(f"query {name}: unknown parameter (the official client sends: {allowed})")
    for name, value in query["required"].items():
        got = [v for n, v in sent if n == name]
        if got != [value]:
            out.append(f"query {name}: must be sent once as {value!r} (got {got or 'nothing'})")
    out += check_answer(entry, spec, endpoint)
    return out


def check_answer(entry, spec, endpoint):
    status, answer = entry.get("status"), entry.get("response")
    if answer is None:
        return []
    if status != 200:
        return [f"error answer: {p}" for p in problems(ERROR_ENVELOPE, answer)]
    out = [f"answer envelope: {p}" for p in problems(PAGE_ENVELOPE, answer)]
    if isinstance(answer, dict) and "data" in answer:
        response = spec["response"]
        found = problems(response["schema"], answer["data"], endpoint, allow_deviations=True)
        out += [f"answer {response['type']}: {p}" for p in found]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recordings", nargs="+", type=Path)
    parser.add_argument("--allow-empty", action="store_true")
    args = parser.parse_args(argv)
    document = json.loads(SCHEMA.read_text())
    endpoints = document["endpoints"]
    checked, failures = 0, []
    for recording in args.recordings:
        lines = recording.read_text().splitlines() if recording.exists() else []
        for number, line in enumerate(lines, 1):
            entry = json.loads(line)
            if not str(entry.get("userAgent") or "").startswith(OUR_AGENT):
                continue
            checked += 1
            request = f"{entry.get('method')} {entry.get('path')}"
            for problem in check_exchange(entry, endpoints):
                failures.append(f"{recording}:{number}: {request}: {problem}")
    source = f"{document['package']} {document['version']}"
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        print(f"nf-schema: {len(failures)} problem(s) in {checked} exchanges checked against {source}", file=sys.stderr)
        return 1
    if checked == 0 and not args.allow_empty:
        print("nf-schema: no exchange of our client was recorded (is NF_EMULATOR_RECORD set?)", file=sys.stderr)
        return 1
    print(f"nf-schema: {checked} exchanges of our client conform to {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
