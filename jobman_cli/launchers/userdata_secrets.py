"""The instance side of secrets by reference (DESIGN.md section 12): the user-data's secrets block.

:func:`render_secrets` gives :func:`~jobman_cli.launchers.userdata.render_user_data` the pieces it
splices into the script when a job references secrets (nothing at all when it does not, so such a
script is byte for byte what it was before secrets existed, and needs no ``python3``):

* **Read after the pull, just before ``docker run``**, each reference with the instance's own role:
  ``aws ssm get-parameter --with-decryption --query Parameter.Value`` or ``aws secretsmanager
  get-secret-value --query SecretString``, ``--output json``. JSON output escapes every byte of the
  value (newlines included), so the command substitution that captures it loses nothing; a small
  fixed ``python3 -I`` program decodes it (and, for ``#key``, picks that key of the secret's JSON
  object: a string as it is, any other JSON value as its compact JSON text) and writes the raw
  value followed by ``.``, which bash strips: trailing newlines survive. Region: the job-log
  target's (the daemon's), or the one inside an ARN reference.
* **Handed over through the ``docker`` process's environment only.** The values sit in a bash array
  (never exported, never in a file); ``docker run`` is started as ``timeout ... python3 -I -c
  "$secret_exec" docker run ... -e NAME ...`` with ``3< <(printf '%s\\0' "${secret_env[@]}")``:
  the builtin ``printf`` writes ``NAME=value`` records into a pipe, the helper reads them, closes
  the pipe and ``execve``\\ s the docker CLI with them added to its environment, and the CLI's
  ``-e NAME`` copies each into the container. No value is ever an argument of any process (only
  builtins and forked subshells touch it), so ``/proc/*/cmdline``, ``ps`` and the console never
  show one; the helper, not bash, sets the variables, so a secret named like a script variable
  (``image``) or a bash special (``UID``, ``SECONDS``) cannot change the script.
* **Never logged.** The script logs references and names only; ``set +x`` at the block's start switches tracing
  off, so even a script run under ``bash -x`` does not trace a value. A failed read
  fails the job as ``secret-unavailable`` with ``secret NAME: cannot read REF (WHY)``, where WHY is
  only AWS's error *code* (``ParameterNotFound``, ``AccessDeniedException`` ...), one of a few fixed
  phrases, or one of the helper's fixed messages: never free text that could carry a value.
  The container is not started; the instance powers off as on every path.
* **Names the Docker CLI reads are refused** (:func:`check_secret_names`): a secret is in the CLI's
  own environment, so ``DOCKER_HOST``, ``LD_PRELOAD``, ``GODEBUG``, proxies ... would change how the
  CLI behaves (and could make it print the value in an error). Plain ``-e`` variables keep those
  names: they are ``KEY=VALUE`` arguments that reach the container only.
"""

from __future__ import annotations

import shlex
from typing import Mapping, NamedTuple

from ..errors import InvalidInput
from ..secretrefs import SECRETS_MANAGER, secret_refs

#: Names a secret may not have: the Docker CLI (Go), the dynamic loader or the helper would read them.
RESERVED_NAMES = frozenset({
    "PATH", "HOME", "TMPDIR", "GODEBUG", "GOGC", "GOMAXPROCS", "GOMEMLIMIT", "GOTRACEBACK",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
})
RESERVED_PREFIXES = ("DOCKER_", "LD_")

_BLOCK = r"""
# Secrets (DESIGN.md section 12): read with the instance's role now, handed to `docker run` through
# its environment by $secret_exec; never an argument, a file or a log line.
set +x
secret_region=@@REGION@@
secrets=(@@PAIRS@@)
secret_env=() secret_err=${TMPDIR:-/tmp}/jobman-secret-$$.err  # 0600 (umask 077), emptied after the reads
secret_py='import json,sys
def no(m):
    sys.stderr.write("jobman-secret: "+m+"\n");sys.exit(3)
try:
    v=json.loads(sys.stdin.buffer.read());k=sys.argv[1]
    if v is None:no("no SecretString (a binary secret?)")
    if k:
        try:v=json.loads(v)
        except ValueError:no("its SecretString is not JSON")
        if type(v) is not dict:no("its SecretString is not a JSON object")
        if k not in v:no("no such key in its JSON")
        v=v[k]
    if type(v) is not str:v=json.dumps(v,ensure_ascii=False,separators=(",",":"))
    if "\0" in v:no("the value holds a NUL byte")
    sys.stdout.buffer.write(v.encode()+b".")
except SystemExit:raise
except BaseException:no("an unreadable answer")'
secret_exec='import os,shutil,sys
d=b""
while 1:
    b=os.read(3,65536)
    if not b:break
    d+=b
os.close(3);e=dict(os.environb)
for r in d.split(b"\0")[:-1]:
    k,_,v=r.partition(b"=");e[k]=v
p=shutil.which(sys.argv[1]) or sys.exit("jobman-secret: docker not found")
try:os.execve(p,sys.argv[1:],e)
except OSError as x:sys.exit("jobman-secret: cannot start docker with the secrets (errno %d)"%x.errno)'
# secret_why RC TOOL: why a read failed; AWS's error code or a fixed phrase, never free text.
secret_why() {
  local e= aws='An error occurred \(([A-Za-z0-9.]{1,64})\)' own='^jobman-secret: ([ -~]{1,60})'
  [[ -r $secret_err ]] && e=$(<"$secret_err")
  if [[ $e =~ $aws || $e =~ $own ]]; then printf '%s' "${BASH_REMATCH[1]}"
  elif [[ $e == *"Unable to locate credentials"* ]]; then printf 'no credentials: no instance profile?'
  elif [[ $e == *"Could not connect to the endpoint"* ]]; then printf 'could not connect to the endpoint'
  elif [[ $e == *"specify a region"* ]]; then printf 'no region'
  elif (( $1 == 124 || $1 == 137 )); then printf 'no answer within 60s'
  elif (( $1 == 127 )); then printf 'no %s on the instance' "$2"
  else printf '%s exited with %s' "$2" "$1"; fi
}
read_secrets() {
  local i name ref id key json value rc reg why args total=0
  for ((i = 0; i < ${#secrets[@]}; i += 2)); do
    name=${secrets[i]} ref=${secrets[i+1]} key=
    id=${ref#*:}
    if [[ $ref == secretsmanager:* ]]; then
      [[ $id == *'#'* ]] && key=${id#*#} id=${id%%#*}
      args=(secretsmanager get-secret-value --secret-id "$id" --query SecretString)
    else
      args=(ssm get-parameter --with-decryption --name "$id" --query Parameter.Value)
    fi
    reg=$secret_region
    [[ $id == arn:* ]] && { reg=${id#arn:*:*:}; reg=${reg%%:*}; }
    log "reading secret $name from $ref"
    json=$(umask 077; AWS_PAGER= AWS_MAX_ATTEMPTS=3 PYTHONIOENCODING=utf-8 timeout 60s aws "${args[@]}" --output json \
      ${reg:+--region "$reg"} --cli-connect-timeout 5 --cli-read-timeout 20 </dev/null 2>"$secret_err")
    rc=$? why=aws
    if (( rc == 0 )); then
      value=$(umask 077; printf '%s' "$json" | python3 -I -c "$secret_py" "$key" 2>"$secret_err")
      rc=$? why=python3
    fi
    if (( rc != 0 )) || [[ $value != *. ]]; then
      problem="secret $name: cannot read $ref ($(secret_why "$rc" "$why"))"
      secret_env=() value= json=
      return 1
    fi
    secret_env+=("$name=${value%.}")
    (( total += ${#value} ))
    if (( total > 262144 )); then  # characters; at most 1 MiB: the docker process's environment must hold them
      problem="secret $name: the job's secrets together exceed 262144 characters"
      secret_env=() value= json=
      return 1
    fi
  done
  value= json=
  log "read ${#secret_env[@]} secret(s)"
}
read_secrets || { : 2>/dev/null >"$secret_err"; fail 125 secret-unavailable "$problem"; }
: 2>/dev/null >"$secret_err"
"""


class SecretPieces(NamedTuple):
    """What the renderer splices in: the block after the pull, ``-e NAME`` arguments, the prefix
    of ``docker run`` (the exec helper) and the redirection that feeds it."""

    block: str
    run_args: str
    exec_prefix: str
    feed: str
    size: int = 0  # bytes that grow with the job's secrets (names and references), for size errors


NO_SECRETS = SecretPieces("", "", "", "")


def reserved_reason(name: str) -> str | None:
    """Why ``name`` cannot be a secret's name, or None when it can."""
    upper = name.upper()
    if upper in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        return (f"{name!r} cannot name a secret: the Docker CLI that hands secrets to the container reads "
                "that variable itself (pass it with -e, or give the secret another name)")
    return None


def check_secret_names(secrets: Mapping[str, str], field: str = "secrets") -> None:
    """Refuse a secret named like a variable the Docker CLI, Go or the loader reads (see above)."""
    for name in sorted(secrets):
        why = reserved_reason(name)
        if why is not None:
            raise InvalidInput(field, why)


def render_secrets(secrets: Mapping[str, str], region: str | None) -> SecretPieces:
    """The secrets pieces for a job's ``secrets`` (NAME -> canonical reference), sorted by name so
    the same job always renders the same bytes; :data:`NO_SECRETS` when there are none."""
    if not secrets:
        return NO_SECRETS
    check_secret_names(secrets)
    refs = secret_refs(secrets)  # InvalidInput for a stored reference that is not canonical
    pairs = "".join(f"\n  {shlex.quote(name)} {shlex.quote(str(refs[name]))}" for name in sorted(refs)) + "\n"
    for ref in refs.values():
        if ref.kind == SECRETS_MANAGER and "#" in ref.name:  # cannot happen for a parsed id; the script splits at '#'
            raise InvalidInput("secrets", f"{ref} has a '#' in its secret id")
    # PAIRS last: nothing is substituted after it, so a reference holding "@@" stays literal.
    block = _BLOCK.replace("@@REGION@@", shlex.quote(region or "")).replace("@@PAIRS@@", pairs)
    run_args = "".join(f"\n  -e {name}" for name in sorted(refs))
    return SecretPieces(block, run_args, 'python3 -I -c "$secret_exec" ',
                        """3< <(printf '%s\\0' "${secret_env[@]}") """, len(pairs) + len(run_args))

