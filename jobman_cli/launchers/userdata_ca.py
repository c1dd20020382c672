"""A private CA for the callbacks: validated PEM text, and the script block that makes curl trust it.

The PEM is embedded in the user-data, so :func:`normalize_callback_ca` is strict on purpose (only
certificate blocks, only base64 inside): that is what makes the quoted heredoc impossible to break
out of. :func:`render_callback_ca` gives the block that writes the file and sets ``curl_tls``, or
the neutral block (the system's CAs) when there is no CA. Reading ``--callback-ca`` at daemon start
is :func:`~jobman_cli.launchers.userdata.load_callback_ca`, beside the renderer it probes with.
"""

from __future__ import annotations

import base64
import binascii
import re

from ..errors import InvalidInput

_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"
_PEM_BASE64 = re.compile(r"[A-Za-z0-9+/]{1,76}={0,2}|={1,2}", re.ASCII)

_NO_CALLBACK_CA = """
curl_tls=()  # no --callback-ca: the system's CAs verify an https callback
"""
_CALLBACK_CA = """
# The CA that signed the daemon's certificate: curl trusts it for the callbacks.
callback_ca_file=${JOBMAN_CALLBACK_CA_FILE:-/run/jobman-callback-ca.pem}
IFS= read -r -d '' callback_ca <<'JOBMAN_CA_EOF'
@@PEM@@JOBMAN_CA_EOF
if ! (umask 022 && printf '%s' "$callback_ca" >"$callback_ca_file"); then
  log "could not write the callback CA to $callback_ca_file; https callbacks will fail"
fi
curl_tls=(--cacert "$callback_ca_file")
"""

def normalize_callback_ca(pem: str) -> str:
    """``pem`` (one or more PEM certificates) in canonical form: the blocks, ``\\n``-terminated.

    Strict on purpose, because the text is embedded in the user-data script: only
    ``-----BEGIN CERTIFICATE-----`` / ``-----END CERTIFICATE-----`` lines around base64 lines
    (blank lines allowed between blocks, trailing whitespace and CRLF tolerated). Anything else
    (a comment, ``Bag Attributes``, a private key, a heredoc terminator, ``$(...)``) raises
    :class:`InvalidInput` naming ``callback-ca``, so the heredoc can never be broken out of.
    """
    if not isinstance(pem, str):
        raise InvalidInput("callback-ca", "must be PEM text")
    out: list[str] = []
    block: list[str] | None = None
    for number, raw in enumerate(pem.split("\n"), start=1):
        line = raw.rstrip(" \t\r")
        if block is None:
            if line == _PEM_BEGIN:
                block = []
            elif line:
                raise InvalidInput("callback-ca", f"line {number}: only PEM CERTIFICATE blocks are allowed")
        elif line == _PEM_END:
            try:
                der = base64.b64decode("".join(block), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput("callback-ca", f"line {number}: the certificate is not valid base64") from None
            if not der.startswith(b"\x30"):
                raise InvalidInput("callback-ca", f"line {number}: the block is not a DER certificate")
            out += [_PEM_BEGIN, *block, _PEM_END]
            block = None
        elif _PEM_BASE64.fullmatch(line):
            block.append(line)
        else:
            raise InvalidInput("callback-ca", f"line {number}: a certificate block may only hold base64 lines")
    if block is not None:
        raise InvalidInput("callback-ca", f"missing {_PEM_END}")
    if not out:
        raise InvalidInput("callback-ca", "no PEM CERTIFICATE block found")
    return "\n".join(out) + "\n"


def render_callback_ca(pem: str | None) -> str:
    """The ``@@CALLBACK_CA@@`` block: trust ``pem`` (validated by :func:`normalize_callback_ca`)
    for the callbacks, or, for ``None``, the system's public CAs."""
    if pem is None:
        return _NO_CALLBACK_CA
    return _CALLBACK_CA.replace("@@PEM@@", normalize_callback_ca(pem))
