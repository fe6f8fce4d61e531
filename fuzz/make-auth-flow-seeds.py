#!/usr/bin/env python3
"""Writes the hand-made seeds of the auth_flow fuzz target to
fuzz/corpus/auth_flow/. The byte layout is documented at the top of
fuzz/fuzz_targets/auth_flow.rs; keep the two in step."""

import os
import struct

T0 = 1_907_755_200  # 2030-06-15 12:00:00 UTC


NEXT = bytes([2])  # the step after the last code typed
CONV_ERR = bytes([4])
REPLAY = bytes([6])
EMPTY = bytes([7 | (3 << 3)])


def header(window=1, second_device=False, pre=0, extreme=False,
           max_failures=5, lock=3, max_attempts=10, per=2,
           unenrolled=0, drift=0, grace=0, exempt_net=False, exempt_group=False,
           d0=9, d1=None, backups=2, now=T0, pre_bytes=b""):
    """The scenario: config, devices, backup codes, clock, pre-state."""
    b0 = window | (4 if second_device else 0) | (pre << 3) | (0x20 if extreme else 0)
    b1 = (max_failures - 1) | (lock << 3)
    b2 = (max_attempts - 1) | (per << 4)  # max_attempts 1..12
    b3 = unenrolled | (drift << 2) | (grace << 4)
    b3 |= (0x40 if exempt_net else 0) | (0x80 if exempt_group else 0)
    out = bytes([b0, b1, b2, b3, d0])
    if second_device:
        out += bytes([d1])
    out += bytes([backups]) + struct.pack("<Q", now)
    if pre in (1, 3):
        out += pre_bytes
    return out


def login(answer, time=None, fault=None, user=None, host=0, key_offset=None):
    """One login: clock move, fault, user/host, then the answer bytes."""
    ctl = 0
    extra = b""
    if time is not None:
        kind, n = time
        ctl |= kind << 4
        extra = bytes([n])
    if fault is not None:
        ctl |= 0x08 | fault
    who = host << 4
    if user is not None:
        ctl |= 0xC0
        who |= user
    if key_offset is not None:
        # The first answer is read (and unused), then the key offset.
        return bytes([ctl]) + extra + bytes([who | 0x08]) + CONV_ERR + bytes([key_offset + 4])
    return bytes([ctl]) + extra + bytes([who]) + answer


def code(offset=0, device=0, spaced=False):
    """A right code `offset` steps from now (the harness computes it)."""
    return bytes([((offset + 7) << 4) | (device << 3) | (1 if spaced else 0)])




def backup(i, grouped=False):
    return bytes([5 | (0x80 if grouped else 0), i])


def wrong(digits=6, value=123456):
    return bytes([7 | ((digits - 6) << 3)]) + struct.pack("<Q", value)


def raw(data):
    return bytes([3, len(data)]) + data


HUGE = bytes([3, 255])

SEEDS = {
    "right-code-replay-wrong-backup-twice": header() + login(code()) + login(REPLAY)
    + login(wrong()) + login(backup(0, grouped=True)) + login(backup(0)) + login(backup(1)),
    "io-failure-at-every-step": header() + b"".join(
        login(code(), fault=step, time=(2, 1)) for step in range(5)) + login(code(), time=(2, 1)),
    "clock-drift-learned": header(window=1, drift=2) + login(code(offset=5) + NEXT)
    + login(code(offset=5), time=(2, 1)),
    "clock-drift-not-confirmed": header(window=0, drift=1) + login(code(offset=-3) + wrong()),
    "lockout-then-right-code": header(max_failures=2, lock=1) + login(wrong()) + login(wrong(8))
    + login(code()) + login(code(), time=(1, 31)),
    "rate-limit": header(max_attempts=2, per=1) + login(wrong()) + login(wrong()) + login(code())
    + login(code(), time=(1, 11)),
    "grace-from-same-host": header(grace=3) + login(code(), host=1) + login(CONV_ERR, host=1)
    + login(code(), host=2, time=(2, 1)),
    "exempt-network": header(exempt_net=True) + login(code(), host=2) + login(code(), host=1)
    + login(code(), host=2, user=0),
    "exempt-group": header(exempt_group=True) + login(code()) + login(code(), user=0),
    "enroll-at-login": header(unenrolled=2) + login(b"", user=0, key_offset=0)
    + login(b"", user=0, key_offset=3) + login(wrong(), user=0),
    "unenrolled-skip-and-bad-names": header(unenrolled=1) + login(code(), user=0)
    + login(code(), user=1) + login(code(), user=2) + login(CONV_ERR, user=4),
    "damaged-state": header(pre=2) + login(code()) + login(CONV_ERR) + login(code(), host=1),
    "pre-state-used-codes-and-drift": header(pre=1, backups=4, drift=2, pre_bytes=bytes([0x1F, 0x0A, 0x05, 0x67]))
    + login(backup(1)) + login(backup(2)) + login(backup(3)) + login(code(offset=-1) + NEXT),
    "two-devices-sha256-8-digits": header(second_device=True, d0=9, d1=9 + 36 + 1 + 3 * 2)
    + login(code(device=1)) + login(code(device=0, spaced=True)) + login(NEXT),
    "malformed-answers": header() + login(raw(b"12 34-56")) + login(raw(b"abcdef")) + login(EMPTY)
    + login(raw("١٢٣٤٥٦".encode())) + login(HUGE) + login(raw(b"1" * 65)),
    "end-of-time_t": header(extreme=True, max_failures=1, lock=3) + login(wrong()) + login(code())
    + login(code(), time=(2, 255)),
    "clock-steps-back": header() + login(code()) + login(code(offset=-1), time=(3, 2)) + login(code(offset=1)),
}

if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "auth_flow")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds to {out}")
