#!/usr/bin/env python3
"""Writes seccomp-io_uring.json: Docker's default seccomp policy with io_uring allowed.

Like Docker's default, the profile is an allow list: a system call it does not name fails
with EPERM, so calls added to later kernels stay refused until someone allows them. It
allows every x86 system call the kernel headers list except the ones Docker's default
refuses to an unprivileged container (DENIED), the conditional rules Docker applies to
clone, clone3, personality and socket, and the three io_uring calls Docker refuses and
Sluice needs.

    python3 deploy/seccomp-profile.py > deploy/seccomp-io_uring.json
"""

import json
import re
import sys

HEADERS = [
    "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
    "/usr/include/x86_64-linux-gnu/asm/unistd_32.h",
]

# Calls newer than the headers above that Docker's default allows.
NEWER = [
    "cachestat",
    "fchmodat2",
    "futex_requeue",
    "futex_wait",
    "futex_wake",
    "map_shadow_stack",
]

IO_URING = ["io_uring_setup", "io_uring_enter", "io_uring_register"]

# What Docker's default refuses a container without added capabilities.
DENIED = {
    "_sysctl", "acct", "add_key", "bpf", "clock_adjtime", "clock_settime",
    "create_module", "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen",
    "fspick", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount",
    "mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
    "process_vm_readv", "process_vm_writev", "ptrace", "query_module", "quotactl",
    "quotactl_fd", "reboot", "request_key", "set_mempolicy", "set_mempolicy_home_node",
    "setns", "settimeofday", "stime", "swapoff", "swapon", "sysfs", "umount", "umount2",
    "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old", "bdflush",
    "fanotify_init", "syslog", "vhangup",
    # Not system calls an x86 process makes, but listed in the headers.
    "afs_syscall", "break", "ftime", "getpmsg", "gtty", "idle", "lock", "mpx", "prof",
    "profil", "putpmsg", "security", "stty", "tuxcall", "ulimit", "vserver",
}

# Given the rules below instead of a plain allow.
CONDITIONAL = {"clone", "clone3", "personality", "socket"}

# The namespace flags of clone(2): CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
# CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET.
CLONE_NAMESPACES = 0x7E020000
# The personalities Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
# and the query 0xffffffff.
PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF]
AF_VSOCK = 40
ENOSYS = 38


def header_names():
    names = set()
    for path in HEADERS:
        with open(path) as header:
            for line in header:
                match = re.match(r"#define __NR_(\w+)\s+\d+", line)
                if match:
                    names.add(match.group(1))
    return names


def profile():
    allowed = sorted((header_names() | set(NEWER)) - DENIED - CONDITIONAL - set(IO_URING))
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {"names": IO_URING, "action": "SCMP_ACT_ALLOW"},
            # Threads, not namespaces.
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {
                        "index": 0,
                        "value": CLONE_NAMESPACES,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            },
            # clone3's flags are behind a pointer a filter cannot read: ENOSYS makes the
            # C library fall back to clone.
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ]
        + [
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
            }
            for value in PERSONALITIES
        ]
        + [
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}],
            }
        ],
    }


if __name__ == "__main__":
    json.dump(profile(), sys.stdout, indent=2)
    sys.stdout.write("\n")
