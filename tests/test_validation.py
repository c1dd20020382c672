"""Table-driven tests of the input rules shared by the CLI and the HTTP API."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jobman_cli import validation as v
from jobman_cli.errors import InvalidInput

DIGEST = "sha256:" + "a" * 64


def refuse(func, *args, field: str, **kwargs) -> InvalidInput:
    """Call ``func``, expect InvalidInput on ``field``, and check the message is one line."""
    with pytest.raises(InvalidInput) as info:
        func(*args, field=field, **kwargs)
    err = info.value
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    assert "\n" not in str(err) and "\r" not in str(err)
    assert err.exit_code == 2 and err.http_status == 400
    return err


# --------------------------------------------------------------------------- images
@pytest.mark.parametrize("ref", [
    "alpine", "alpine:3.20", "library/alpine:latest", "ubuntu:22.04", "python:3.11-slim",
    "ghcr.io/owner/repo:v1.2.3", "registry.example.com:5000/team/app:1", "localhost:5000/app",
    "localhost/app", "127.0.0.1:5000/app:dev", "[::1]:5000/app", "Registry.Example.COM/app",
    "a", "a_b__c---d/e.f", "a.b_c__d---e", "my-org/my_app.v2", f"alpine@{DIGEST}", f"alpine:3.20@{DIGEST}",
    f"ghcr.io/o/r@sha512:{'0' * 128}", "alpine:_tag", "alpine:T.A-g_1", "x:" + "t" * 128,
    "localhost:5000", "example.com", "1/2/3", "a/" + "b" * 253,
    "123456789012.dkr.ecr.eu-central-1.amazonaws.com/jobs/worker:2026-01-01",
])
def test_valid_images(ref):
    assert v.validate_image(ref) == ref


@pytest.mark.parametrize("ref, detail", [
    ("", "must not be empty"),
    ("-rm", "must not start with '-'"),
    ("--privileged", "must not start with '-'"),
    ("UPPER/case", "uppercase"),
    ("Alpine", "uppercase"),
    ("myorg/App:1", "uppercase"),
    ("alpine latest", "whitespace"),
    (" alpine", "whitespace"),
    ("alpine\n", "whitespace"),
    ("alpine\x00", "whitespace"),
    ("alp\x1bine", "whitespace"),
    ("alpine\t", "whitespace"),
    ("älpine", "non-ASCII"),
    ("alpine:", "tag"),
    ("alpine:.x", "tag"),
    ("alpine:-x", "tag"),
    ("alpine:" + "t" * 129, "tag"),
    ("alpine:a:b", "registry"),
    ("alpine@sha256:abc", "64 lowercase hex"),
    ("alpine@sha256:" + "a" * 63, "64 lowercase hex"),
    ("alpine@sha256:" + "a" * 65, "64 lowercase hex"),
    ("alpine@sha256:" + "A" * 64, "64 lowercase hex"),
    ("alpine@sha256:" + "g" * 64, "64 lowercase hex"),
    ("alpine@md5:" + "a" * 32, "64 lowercase hex"),
    ("alpine@" + "a" * 64, "64 lowercase hex"),
    (f"alpine@{DIGEST}@{DIGEST}", "64 lowercase hex"),
    ("/alpine", "path component ''"),
    ("alpine/", "path component ''"),
    ("a//b", "path component ''"),
    (":latest", "path component ''"),
    (f"@{DIGEST}", "path component ''"),
    ("a_-b", "path component"),
    ("a___b", "path component"),
    ("_a", "path component"),
    ("a.", "path component"),
    ("example.com/", "path component ''"),
    ("-.example.com/app", "must not start"),
    ("bad_host.com/app", "registry"),
    ("host.com:port/app", "registry"),
    ("host-.com/app", "registry"),
    ("a/" + "b" * 254, "longer than 255"),
])
def test_invalid_images(ref, detail):
    err = refuse(v.validate_image, ref, field="--image")
    assert detail in err.rule


def test_image_message_names_the_grammar():
    err = refuse(v.validate_image, "UPPER/case", field="docker-image")
    assert str(err).startswith(
        "docker-image: 'UPPER/case' is not a valid Docker reference "
        "([registry[:port]/]path[:tag][@sha256:digest]; path components are lowercase)"
    )


@pytest.mark.parametrize("value", [None, 3, ["alpine"], {"image": "alpine"}])
def test_image_must_be_a_string(value):
    assert "must be a string" in refuse(v.validate_image, value, field="docker-image").rule


def test_huge_image_message_stays_short():
    err = refuse(v.validate_image, "A" * 10_000, field="--image")
    assert len(str(err)) < 400


# --------------------------------------------------------------------------- env keys and values
@pytest.mark.parametrize("key", ["A", "_", "_x", "PATH", "a1_B2", "x" * 128, "lower_case"])
def test_valid_env_keys(key):
    assert v.validate_env_key(key) == key


@pytest.mark.parametrize("key", ["", "1A", "A-B", "A B", "A.B", "A=B", "Ä", "x" * 129, "A\n", "$A", None, 1])
def test_invalid_env_keys(key):
    assert "valid variable name" in refuse(v.validate_env_key, key, field="-e").rule


@pytest.mark.parametrize("value", [
    "", "plain", "with space", "'single'", '"double"', "$HOME", "`id`", "a;b", "$(rm -rf /)",
    "line1\nline2", "tab\there", "ünïcödé ✓ 日本", "\\backslash", "=leading=equals", "\r\n",
])
def test_env_values_pass_byte_exact(value):
    assert v.validate_env_value("K", value) == value


@pytest.mark.parametrize("value, detail", [
    ("a\x00b", "NUL"), (1, "got number"), (None, "got null"), (True, "got boolean"),
    (["x"], "got array"), ({"a": "b"}, "got object"), (1.5, "got number"),
])
def test_invalid_env_values(value, detail):
    err = refuse(v.validate_env_value, "KEY", value, field="env-variables")
    assert "'KEY'" in err.rule and detail in err.rule


# --------------------------------------------------------------------------- -e KEY=VALUE
@pytest.mark.parametrize("items, expected", [
    ([], {}),
    (["A=1"], {"A": "1"}),
    (["A="], {"A": ""}),
    (["A==b=c"], {"A": "=b=c"}),
    (["A=1", "B=two words", "A=3"], {"A": "3", "B": "two words"}),
    (["Q='x' \"y\" $z `w`;"], {"Q": "'x' \"y\" $z `w`;"}),
    (("A=1" for _ in range(2)), {"A": "1"}),
])
def test_env_assignments(items, expected):
    assert v.parse_env_assignments(items) == expected


@pytest.mark.parametrize("items, detail", [
    (["A"], "must be KEY=VALUE"),
    (["=value"], "valid variable name"),
    (["1A=x"], "valid variable name"),
    (["A B=x"], "valid variable name"),
    (["OK=1", "NOPE"], "must be KEY=VALUE"),
    (["A=\x00"], "NUL"),
])
def test_invalid_env_assignments(items, detail):
    assert detail in refuse(v.parse_env_assignments, items, field="-e").rule


# --------------------------------------------------------------------------- KEY=VALUE text
@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("\n\n  \n", {}),
    ("A=1", {"A": "1"}),
    ("A=1\nB=2\n", {"A": "1", "B": "2"}),
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ("# comment\n  # indented comment\nA=1", {"A": "1"}),
    ("export A=1\nexport\tB=2", {"A": "1", "B": "2"}),
    ("  A=1", {"A": "1"}),
    ("A=\"quoted\"", {"A": "\"quoted\""}),
    ("A='x'", {"A": "'x'"}),
    ("A= spaced ", {"A": " spaced "}),
    ("A=x#not a comment", {"A": "x#not a comment"}),
    ("A=$B ${C} `d`", {"A": "$B ${C} `d`"}),
    ("A=1\nA=2", {"A": "2"}),
    ("A=", {"A": ""}),
    ("URL=http://h/?a=b&c=d", {"URL": "http://h/?a=b&c=d"}),
    ("exportX=1", {"exportX": "1"}),
    ("U=ünï ✓", {"U": "ünï ✓"}),
])
def test_env_text(text, expected):
    assert v.parse_env_text(text) == expected


@pytest.mark.parametrize("text, detail", [
    ("A=1\nNOPE", "line 2: 'NOPE' must be KEY=VALUE"),
    ("A B=1", "line 1:"),
    ("export =1", "valid variable name"),
    ("A =1", "valid variable name"),
    ("1A=1", "valid variable name"),
    ("A=\x00", "NUL"),
    ("export", "must be KEY=VALUE"),
])
def test_invalid_env_text(text, detail):
    assert detail in refuse(v.parse_env_text, text, field="env-variables").rule


def test_env_text_must_be_a_string():
    assert "got array" in refuse(v.parse_env_text, ["A=1"], field="env-variables").rule


# --------------------------------------------------------------------------- --env-file
def test_read_env_file(tmp_path):
    path = tmp_path / "job.env"
    path.write_bytes("\ufeff# settings\r\nexport A=1\r\nB=it's \"fine\" $X\r\n\r\nC=ü\r\n".encode())
    assert v.read_env_file(str(path)) == {"A": "1", "B": "it's \"fine\" $X", "C": "ü"}


def test_read_env_file_errors(tmp_path):
    missing = str(tmp_path / "missing.env")
    assert "no such file" in refuse(v.read_env_file, missing, field="--env-file").rule
    assert "missing.env" in refuse(v.read_env_file, missing, field="--env-file").rule
    assert "directory" in refuse(v.read_env_file, str(tmp_path), field="--env-file").rule

    latin = tmp_path / "latin1.env"
    latin.write_bytes(b"A=caf\xe9\n")
    assert "not UTF-8" in refuse(v.read_env_file, str(latin), field="--env-file").rule

    bad = tmp_path / "bad.env"
    bad.write_text("A=1\nnot an assignment\n")
    rule = refuse(v.read_env_file, str(bad), field="--env-file").rule
    assert "bad.env line 2" in rule

    big = tmp_path / "big.env"
    big.write_text("A=" + "x" * (64 * 1024))
    assert "larger than 64 KiB" in refuse(v.read_env_file, str(big), field="--env-file").rule

    assert "cannot read" in refuse(v.read_env_file, "a\x00b", field="--env-file").rule


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_read_env_file_unreadable(tmp_path):
    path = tmp_path / "secret.env"
    path.write_text("A=1\n")
    path.chmod(0)
    assert "permission denied" in refuse(v.read_env_file, str(path), field="--env-file").rule


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_read_env_file_does_not_read_forever():
    assert "larger than" in refuse(v.read_env_file, "/dev/zero", field="--env-file").rule


# --------------------------------------------------------------------------- API env mapping
@pytest.mark.parametrize("obj, expected", [
    (None, {}),
    ({}, {}),
    ("", {}),
    ({"A": "1", "B": ""}, {"A": "1", "B": ""}),
    ("A=1\nB=2", {"A": "1", "B": "2"}),
    ({f"K{i}": "v" for i in range(100)}, {f"K{i}": "v" for i in range(100)}),
    ({"K": "x" * (8 * 1024 - 1)}, {"K": "x" * (8 * 1024 - 1)}),
])
def test_env_mapping(obj, expected):
    assert v.validate_env_mapping(obj) == expected


@pytest.mark.parametrize("obj, detail", [
    ({"A": 1}, "value of 'A' must be a string (got number)"),
    ({"A": None}, "got null"),
    ({"A": ["x"]}, "got array"),
    ({"A": True}, "got boolean"),
    ({"1A": "x"}, "valid variable name"),
    ({1: "x"}, "valid variable name"),
    (["A=1"], "must be an object of string to string or a string of KEY=VALUE lines (got array)"),
    (5, "got number"),
    ({f"K{i}": "v" for i in range(101)}, "at most 100"),
    ("\n".join(f"K{i}=v" for i in range(101)), "at most 100"),
    ({"K": "x" * (8 * 1024)}, "16 KiB"),
    ({"K": "é" * (4 * 1024)}, "8 KiB"),  # bytes, not characters
])
def test_invalid_env_mapping(obj, detail):
    assert detail in refuse(v.validate_env_mapping, obj, field="env-variables").rule


# --------------------------------------------------------------------------- title
@pytest.mark.parametrize("title, expected", [
    ("", ""), (None, ""), ("nightly build", "nightly build"), ("  padded\t\n", "padded"),
    ("ünïcödé ✓ 日本", "ünïcödé ✓ 日本"), ("x" * 200, "x" * 200), ("a\"b'c$d", "a\"b'c$d"),
])
def test_valid_titles(title, expected):
    assert v.validate_title(title) == expected


@pytest.mark.parametrize("title, detail", [
    ("x" * 201, "at most 200"),
    ("two\nlines", "control"),
    ("nul\x00", "control"),
    ("esc\x1b[31mred", "control"),
    ("del\x7f", "control"),
    ("c1\x85x", "control"),
    ("sep\u2028x", "control"),
    ("bidi\u202etxt", "control"),
    (5, "must be a string"),
    (["t"], "got array"),
])
def test_invalid_titles(title, detail):
    assert detail in refuse(v.validate_title, title, field="--title").rule


# --------------------------------------------------------------------------- durations
@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1d2h3m4s", 93784),
    ("90", 90), ("1", 1), (" 45s ", 45), ("0h1s", 1), ("7d", 604800), ("604800", 604800),
    ("90m", 5400), (3600, 3600), (1, 1),
])
def test_valid_durations(text, seconds):
    assert v.parse_duration(text, field="--timeout") == seconds


@pytest.mark.parametrize("text, detail", [
    ("0", "more than 0"), ("0s", "more than 0"), ("0h0m", "more than 0"), (0, "more than 0"),
    ("-5", "not a duration"), ("-5m", "not a duration"), (-5, "more than 0"),
    ("1.5", "not a duration"), ("1.5h", "not a duration"), (1.5, "got number"),
    ("1x", "not a duration"), ("", "not a duration"), (" ", "not a duration"),
    ("m", "not a duration"), ("h1", "not a duration"), ("30m1h", "not a duration"),
    ("1h1h", "not a duration"), ("1H", "not a duration"), ("1 h", "not a duration"),
    ("1w", "not a duration"), ("٣s", "not a duration"), ("+5m", "not a duration"),
    ("7d1s", "at most 604800"), (604801, "at most 604800"), ("9" * 40, "not a duration"),
    (True, "got boolean"), (None, "got null"), (["1m"], "got array"),
])
def test_invalid_durations(text, detail):
    assert detail in refuse(v.parse_duration, text, field="--timeout").rule


def test_duration_maximum_is_adjustable():
    assert v.parse_duration("30d", field="--wait-timeout", maximum=31 * 86400) == 30 * 86400
    refuse(v.parse_duration, "2h", field="--wait-timeout", maximum=3600)


@pytest.mark.parametrize("text, seconds", [("0", 0), ("0s", 0), ("1h30m", 5400), ("", None), ("x", None)])
def test_duration_grammar_alone(text, seconds):
    assert v.duration_seconds(text) == seconds


# --------------------------------------------------------------------------- instance types
@pytest.mark.parametrize("text", ["t3.micro", "m7g.2xlarge", "c6in.metal", "u-6tb1.56xlarge", "mac2-m2pro.metal"])
def test_valid_instance_types(text):
    assert v.validate_instance_type(text) == text


@pytest.mark.parametrize("text", [
    "", "t3", "T3.micro", "t3.Micro", "3t.micro", "t3.micro ", "t3..micro", "t3.micro.x", "-t3.micro",
    "t3_micro", "a" * 60 + ".large", None, 3,
])
def test_invalid_instance_types(text):
    assert "EC2 instance type" in refuse(v.validate_instance_type, text, field="--instance-type").rule


# --------------------------------------------------------------------------- idempotency keys
@pytest.mark.parametrize("text", ["k", "nightly-2026-01-01", "a" * 128, "!~#$%&'()*+,-./:;<=>?@[]^_`{|}"])
def test_valid_idempotency_keys(text):
    assert v.validate_idempotency_key(text) == text


@pytest.mark.parametrize("text", ["", "a b", " a", "a\t", "a\n", "a" * 129, "ü", "a\x00", "a\x7f", None, 5])
def test_invalid_idempotency_keys(text):
    assert "printable ASCII" in refuse(v.validate_idempotency_key, text, field="--idempotency-key").rule


# --------------------------------------------------------------------------- exit codes
@pytest.mark.parametrize("value, expected", [(0, 0), (1, 1), (255, 255), ("0", 0), ("42", 42), ("255", 255), ("007", 7)])
def test_valid_exit_codes(value, expected):
    assert v.parse_exit_code(value) == expected


@pytest.mark.parametrize("value", [
    -1, 256, 10**100, True, False, 1.0, 0.5, None, "", "-1", "+1", " 1", "1 ", "256", "1.0", "0x1", "1e2",
    "٣", "1000", [1], {"code": 1},
])
def test_invalid_exit_codes(value):
    assert "from 0 to 255" in refuse(v.parse_exit_code, value, field="--exit-code").rule


def test_exit_code_beyond_int_str_limit_does_not_crash():
    assert "a huge number" in refuse(v.parse_exit_code, 10**5000, field="exit-code").rule


# --------------------------------------------------------------------------- job ids
@pytest.mark.parametrize("value, expected", [
    (1, 1), ("1", 1), ("42", 42), (2**53, 2**53), (str(2**53), 2**53), ("1234567890", 1234567890),
])
def test_valid_job_ids(value, expected):
    assert v.parse_job_id(value) == expected


@pytest.mark.parametrize("value", [
    0, "0", -1, "-1", "+1", "01", "00", "1.0", 1.0, "1/../2", "../1", "1 ", " 1", "", "1e3", "0x10",
    "١", "²", 2**53 + 1, str(2**53 + 1), "9" * 17, "9" * 5000, True, None, [1],
])
def test_invalid_job_ids(value):
    assert "positive integer job id" in refuse(v.parse_job_id, value, field="id").rule


# --------------------------------------------------------------------------- import cost
def test_validation_imports_only_the_standard_library():
    """It sits on the CLI's start-up path (and every TAB completion)."""
    code = (
        "import sys; import jobman_cli.validation, jobman_cli.timeparse; "
        "bad = [m for m in ('dateutil', 'zoneinfo', 'boto3', 'botocore', 'click', 'rich', 'tinydb') "
        "if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
