#!/usr/bin/python3
"""Runs a command under a Docker-format seccomp profile, the way a container runtime would.

    seccomp_exec.py PROFILE.json COMMAND [ARG...]

Loads the profile into a filter with libseccomp (Debian's python3-seccomp), installs it,
and execs the command. Like runc, names this libseccomp does not know are skipped, and
the filter is limited to the native architecture.
"""

import json
import os
import sys

import seccomp

OPS = {
    "SCMP_CMP_EQ": seccomp.EQ,
    "SCMP_CMP_NE": seccomp.NE,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}


def action(name, errno):
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno)
    raise SystemExit(f"unsupported action {name}")


def comparison(arg):
    op = OPS[arg["op"]]
    if op == seccomp.MASKED_EQ:
        return seccomp.Arg(arg["index"], op, arg["value"], arg.get("valueTwo", 0))
    return seccomp.Arg(arg["index"], op, arg["value"])


def build(profile):
    default_errno = profile.get("defaultErrnoRet", 1)
    scmp = seccomp.SyscallFilter(action(profile["defaultAction"], default_errno))
    for rule in profile["syscalls"]:
        act = action(rule["action"], rule.get("errnoRet", default_errno))
        args = [comparison(a) for a in rule.get("args", [])]
        for name in rule["names"]:
            try:
                scmp.add_rule(act, name, *args)
            except (RuntimeError, ValueError):
                pass  # unknown to this libseccomp
    return scmp


def main():
    with open(sys.argv[1]) as f:
        profile = json.load(f)
    build(profile).load()
    os.execv(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
