#!/usr/bin/env python3
"""PKCS#11 behaviour across fork() (PKCS#11 v2.40 §6.7.7, v3.0 §5.4): a child that inherits
an initialised module must call C_Initialize before using it; until then calls answer
CKR_CRYPTOKI_NOT_INITIALIZED, and after it the module works in the child as in the parent.

Driven through ctypes so that the module is loaded exactly as a C program loads it.
Usage: fork_check.py /path/to/module.so    (exit 0 when the behaviour holds)"""
import ctypes
import os
import sys

CKR_OK = 0
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190

lib = ctypes.CDLL(sys.argv[1])
table = ctypes.POINTER(ctypes.c_void_p)()
assert lib.C_GetFunctionList(ctypes.byref(table)) == CKR_OK
# CK_FUNCTION_LIST: CK_VERSION (padded to one pointer), then the functions in spec order.
entries = ctypes.cast(table, ctypes.POINTER(ctypes.c_void_p))
C_Initialize = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_void_p)(entries[1])
C_GetSlotList = ctypes.CFUNCTYPE(
    ctypes.c_ulong, ctypes.c_ubyte, ctypes.c_void_p, ctypes.POINTER(ctypes.c_ulong)
)(entries[5])
C_GetTokenInfo = ctypes.CFUNCTYPE(ctypes.c_ulong, ctypes.c_ulong, ctypes.c_void_p)(entries[7])


def token_info(slot):
    """C_GetTokenInfo talks to the card (it reads the PIN counter)."""
    buf = ctypes.create_string_buffer(1024)
    return C_GetTokenInfo(slot, buf)


def slot_count():
    n = ctypes.c_ulong(0)
    rv = C_GetSlotList(1, None, ctypes.byref(n))
    return rv, n.value


assert C_Initialize(None) == CKR_OK
rv, slots = slot_count()
assert rv == CKR_OK and slots >= 1, (rv, slots)
slot_ids = (ctypes.c_ulong * slots)()
n = ctypes.c_ulong(slots)
assert C_GetSlotList(1, slot_ids, ctypes.byref(n)) == CKR_OK
slot = slot_ids[0]
assert token_info(slot) == CKR_OK

pid = os.fork()
if pid == 0:
    rv, _ = slot_count()
    if rv != CKR_CRYPTOKI_NOT_INITIALIZED:
        print(f"child before C_Initialize: rv {rv:#x}", flush=True)
        os._exit(1)
    if C_Initialize(None) != CKR_OK:
        print("child C_Initialize failed", flush=True)
        os._exit(2)
    rv, n = slot_count()
    if rv != CKR_OK or n < 1:
        print(f"child after C_Initialize: rv {rv:#x}, {n} slots", flush=True)
        os._exit(3)
    os._exit(0)

_, status = os.waitpid(pid, 0)
rv, n = slot_count()
assert rv == CKR_OK and n >= 1, ("parent after fork", rv, n)
# The child's C_Initialize must not have disconnected (reset) the parent's card.
rv = token_info(slot)
assert rv == CKR_OK, f"parent's card after the child initialised: rv {rv:#x}"
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(f"child failed with {os.waitstatus_to_exitcode(status)}")
print("fork: parent keeps working, child gets CKR_CRYPTOKI_NOT_INITIALIZED until C_Initialize")
