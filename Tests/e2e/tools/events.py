#!/usr/bin/env python3
"""Queries conntrackr's JSON-lines output (one event object per line) for the end-to-end tests.

  events.py check FILE [--since EPOCH] [--until EPOCH]
      Every non-empty line must be a JSON object with a string "event" and a "time" of the form
      2021-04-28T15:28:05.000000Z (within [since, until] when given), and address fields must be in canonical
      form (RFC 5952 for IPv6); a last line {"kind":"summary",...} (replay --summary) must hold whole counts.
      Prints the number of events; exits 1 naming the first bad line.
  events.py count FILE [KEY=VALUE...]
      Prints how many events match every KEY=VALUE.
  events.py list FILE FIELD [KEY=VALUE...]
      Prints FIELD of every matching event, one per line (lists joined with commas).

VALUE is compared with the field's JSON value as text; src and dst are compared as addresses or prefixes, so
2001:db8:1::56 matches 2001:db8:1:0::56.
"""
import datetime
import ipaddress
import json
import re
import sys

ADDRESS_FIELDS = ("src", "dst")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def parse_address(text):
    """An address or prefix object, or None when text is neither."""
    try:
        return ipaddress.ip_network(text, strict=False) if "/" in text else ipaddress.ip_address(text)
    except ValueError:
        return None


def load(path):
    events = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as error:
                raise SystemExit(f"{path}:{number}: not JSON ({error}): {line.strip()[:200]}")
            if not isinstance(event, dict):
                raise SystemExit(f"{path}:{number}: not a JSON object: {line.strip()[:200]}")
            events.append((number, event))
    return events


def text(value):
    if isinstance(value, list):
        return ",".join(text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def matches(event, conditions):
    for key, wanted in conditions:
        if key not in event:
            return False
        actual = event[key]
        if key in ADDRESS_FIELDS and isinstance(actual, str):
            a, w = parse_address(actual), parse_address(wanted)
            if a is not None and w is not None:
                if a != w:
                    return False
                continue
        if text(actual) != wanted:
            return False
    return True


def parse_conditions(args):
    conditions = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"condition '{arg}' is not KEY=VALUE")
        conditions.append((key, value))
    return conditions


def check(path, since, until):
    events = load(path)
    if events and events[-1][1].get("kind") == "summary":
        # replay --summary ends with one summary object (README: Replay); its counts must be whole numbers.
        number, summary = events.pop()
        for key in ("files", "files_failed", "frames", "attempts", "new_connections", "port_scans"):
            if not isinstance(summary.get(key), int) or summary[key] < 0:
                raise SystemExit(f"{path}:{number}: summary '{key}' is not a count: {summary.get(key)!r}")
    for number, event in events:
        where = f"{path}:{number}"
        if event.get("kind") == "summary":
            raise SystemExit(f"{where}: a summary before the last line")
        if not isinstance(event.get("event"), str):
            raise SystemExit(f"{where}: no string 'event': {json.dumps(event)}")
        stamp = event.get("time")
        if not isinstance(stamp, str) or not TIME_RE.match(stamp):
            raise SystemExit(f"{where}: 'time' is not YYYY-MM-DDTHH:MM:SS.ffffffZ: {stamp!r}")
        seconds = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        if since is not None and seconds < since or until is not None and seconds > until:
            raise SystemExit(f"{where}: time {stamp} outside the test's run [{since}, {until}]")
        for key in ADDRESS_FIELDS:
            if key in event:
                value = event[key]
                parsed = parse_address(value) if isinstance(value, str) else None
                if parsed is None:
                    raise SystemExit(f"{where}: '{key}' is not an address: {value!r}")
                if str(parsed) != value:
                    raise SystemExit(f"{where}: '{key}' {value!r} is not in canonical form ({parsed})")
    print(len(events))


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    command, path, rest = argv[1], argv[2], argv[3:]
    if command == "check":
        since = until = None
        while rest:
            option, value, rest = rest[0], float(rest[1]), rest[2:]
            if option == "--since":
                since = value
            elif option == "--until":
                until = value
            else:
                raise SystemExit(f"unknown option {option}")
        check(path, since, until)
    elif command == "count":
        conditions = parse_conditions(rest)
        print(sum(1 for _, event in load(path) if matches(event, conditions)))
    elif command == "list":
        if not rest:
            raise SystemExit("list needs a FIELD")
        field, conditions = rest[0], parse_conditions(rest[1:])
        for _, event in load(path):
            if matches(event, conditions):
                print(text(event.get(field, "")))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv)
