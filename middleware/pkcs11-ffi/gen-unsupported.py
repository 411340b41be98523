#!/usr/bin/env python3
# Regenerates src/unsupported.rs and src/lists.rs from the cryptoki-sys bindings:
#   python3 gen-unsupported.py ~/.cargo/registry/src/*/cryptoki-sys-0.5.0/src/bindings/x86_64-unknown-linux-gnu.rs && cargo fmt
# The list IMPLEMENTED must name every function written by hand in src/functions.rs.
import json, re, sys

IMPLEMENTED = set("""C_Initialize C_Finalize C_GetInfo C_GetFunctionList C_GetSlotList C_GetSlotInfo
C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_OpenSession C_CloseSession C_CloseAllSessions
C_GetSessionInfo C_Login C_Logout C_GetAttributeValue C_FindObjectsInit C_FindObjects
C_FindObjectsFinal C_SignInit C_Sign C_SignUpdate C_SignFinal C_DecryptInit C_Decrypt
C_GenerateRandom C_SeedRandom C_GetInterfaceList C_GetInterface C_LoginUser C_SessionCancel
C_GetFunctionStatus C_CancelFunction C_InitPIN C_SetPIN C_DeriveKey C_DestroyObject
C_WaitForSlotEvent""".split())

flat = re.sub(r"\s+", " ", open(sys.argv[1]).read())
body = re.search(r"pub struct CK_FUNCTION_LIST_3_0 \{(.*?)\}", flat).group(1)
order = re.findall(r"pub (C_\w+): CK_C_\w+", body)
sigs = {}
for n in order:
    m = re.search(r"pub type CK_" + n + r' = ::std::option::Option< ?unsafe extern "C" fn\((.*?)\) -> CK_RV,? ?>;', flat)
    sigs[n] = m.group(1).strip().rstrip(",").replace("::std::os::raw::c_void", "c_void")

out = ["//! The PKCS#11 functions the module does not offer: each answers `CKR_FUNCTION_NOT_SUPPORTED`",
       "//! (PKCS#11 §5.1) with the exact C signature of its slot in the function list. Generated",
       "//! from the `cryptoki-sys` 0.5 bindings by `gen-unsupported.py` beside this crate.",
       "", "#![allow(non_snake_case, clippy::missing_safety_doc)]", "", "use std::ffi::c_void;", "",
       "use tessera_pkcs11_core::sys::*;", ""]
for n in order:
    if n in IMPLEMENTED:
        continue
    args = ", ".join("_" + a.strip() for a in sigs[n].split(", ")) if sigs[n] else ""
    out.append(f'pub(crate) unsafe extern "C" fn {n}({args}) -> CK_RV {{\n    CKR_FUNCTION_NOT_SUPPORTED\n}}\n')
open("src/unsupported.rs", "w").write("\n".join(out))

def function_list(name, ty, names, version):
    lines = [f"pub(crate) static {name}: {ty} = {ty} {{",
             f"    version: CK_VERSION {{ major: {version[0]}, minor: {version[1]} }},"]
    lines += [f"    {n}: Some({'f' if n in IMPLEMENTED else 'u'}::{n})," for n in names]
    return "\n".join(lines + ["};"])

v240 = order[: order.index("C_GetInterfaceList")]
open("src/lists.rs", "w").write("\n".join([
    "//! The function lists: PKCS#11 2.40 (`C_GetFunctionList`) and 3.0 (`C_GetInterface`).",
    "//! Generated with `gen-unsupported.py`; the order is the specification's.", "",
    "use tessera_pkcs11_core::sys::*;", "", "use crate::functions as f;", "use crate::unsupported as u;", "",
    function_list("FUNCTION_LIST", "CK_FUNCTION_LIST", v240, (2, 40)), "",
    function_list("FUNCTION_LIST_3_0", "CK_FUNCTION_LIST_3_0", order, (3, 0)), ""]))
