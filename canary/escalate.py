"""What a hostile image does with a file-capped binary, for canary/Dockerfile's probe image.

The image gives a copy of python `cap_setuid,cap_setgid+p` and runs this with it, three ways:

    c2d-canary-capped escalate.py --entrypoint CMD...  the image's ENTRYPOINT: the container's first exec
    c2d-canary-capped escalate.py --healthcheck        the image's HEALTHCHECK: Docker's exec into it
    c2d-canary-capped escalate.py --report             the probe runs it, and reads the line it prints

Each time it raises its effective set to whatever the exec left it permitted (capset: a binary
that knows its capabilities needs no `e` bit), tries to become root (setegid(0), seteuid(0)),
and says what it got in one line (`gained=yes` if any capability or an id 0), then steps back. With --entrypoint and --healthcheck
the line is appended to a marker in the job's outputs, which the probe reads; --entrypoint then
execs the container's command as Docker would have, with whatever it gained.

Docker >= 24.0.6 leaves a non-root container's default capabilities in its permitted set, so on
an instance without the C2D runtime the ENTRYPOINT and the HEALTHCHECK (each the first exec of
its process) gain CAP_SETUID and become root; through the runtime the bounding set is empty and
they gain nothing. Stdlib only; it runs in the image's python, not in the canary's environment.
"""
from __future__ import annotations

import ctypes
import os
import sys

OUTPUTS = "/data/outputs"
MARKERS = {"--entrypoint": OUTPUTS + "/.c2d-entrypoint", "--healthcheck": OUTPUTS + "/.c2d-healthcheck"}
CAPABILITY_VERSION_3 = 0x20080522


class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def raise_effective() -> str:
    """Make every permitted capability effective; "ok", or the errno's name."""
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(CAPABILITY_VERSION_3, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        return os.strerror(ctypes.get_errno())
    for part in data:
        part.effective = part.permitted
    if libc.capset(ctypes.byref(header), data) != 0:
        return os.strerror(ctypes.get_errno())
    return "ok"


def status() -> dict[str, str]:
    with open("/proc/self/status") as handle:
        return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)


def attempt(mode: str) -> str:
    """Raise, become root (effective ids: the real and saved ones stay the algorithm's), note what
    that gave, and step back to the algorithm's ids, so the marker can still be written (root
    holding only CAP_SETUID and CAP_SETGID cannot write the algorithm's folders) and the probe's
    own lines still run as the algorithm. The line is the evidence either way."""
    uid, gid = os.getuid(), os.getgid()
    raised = raise_effective()
    tried = []
    for name, call in (("setegid", os.setegid), ("seteuid", os.seteuid)):
        try:
            call(0)
            tried.append(f"{name}=ok")
        except OSError as error:
            tried.append(f"{name}={os.strerror(error.errno or 0).replace(' ', '_')}")
    fields, euid, egid = status(), os.geteuid(), os.getegid()
    gained = euid == 0 or egid == 0 or int(fields["CapEff"], 16) != 0 or int(fields["CapPrm"], 16) != 0
    for call, value in ((os.setegid, gid), (os.seteuid, uid)):  # the group first, while CAP_SETGID is still held
        try:
            call(value)
        except OSError:
            pass
    return (f"c2d-canary escalate mode={mode.lstrip('-')} uid={uid} euid={euid} egid={egid} CapEff={fields['CapEff']} "
            f"CapPrm={fields['CapPrm']} raise={raised.replace(' ', '_')} {' '.join(tried)} gained={'yes' if gained else 'no'}")


def main(argv: list[str]) -> int:
    mode = argv[1] if len(argv) > 1 else "--report"
    line = attempt(mode)
    if mode in MARKERS:
        try:
            with open(MARKERS[mode], "a") as marker:
                marker.write(line + "\n")
        except OSError as error:  # no job volume (the image run by hand): say so, go on
            print(f"c2d-canary: no marker ({error})", file=sys.stderr)
    else:
        print(line, flush=True)
    if mode == "--entrypoint" and len(argv) > 2:
        os.execvp(argv[2], argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
