//! The PKCS#11 functions the module does not offer: each answers `CKR_FUNCTION_NOT_SUPPORTED`
//! (PKCS#11 §5.1) with the exact C signature of its slot in the function list. Generated
//! from the `cryptoki-sys` 0.5 bindings by `gen-unsupported.py` beside this crate.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::ffi::c_void;

use tessera_pkcs11_core::sys::*;

pub(crate) unsafe extern "C" fn C_InitToken(
    _arg1: CK_SLOT_ID,
    _arg2: *mut CK_UTF8CHAR,
    _arg3: CK_ULONG,
    _arg4: *mut CK_UTF8CHAR,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_GetOperationState(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_SetOperationState(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: CK_OBJECT_HANDLE,
    _arg5: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_CreateObject(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_ATTRIBUTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_CopyObject(
    _arg1: CK_SESSION_HANDLE,
    _arg2: CK_OBJECT_HANDLE,
    _arg3: *mut CK_ATTRIBUTE,
    _arg4: CK_ULONG,
    _arg5: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_GetObjectSize(
    _arg1: CK_SESSION_HANDLE,
    _arg2: CK_OBJECT_HANDLE,
    _arg3: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_SetAttributeValue(
    _arg1: CK_SESSION_HANDLE,
    _arg2: CK_OBJECT_HANDLE,
    _arg3: *mut CK_ATTRIBUTE,
    _arg4: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_EncryptInit(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_Encrypt(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_EncryptUpdate(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_EncryptFinal(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DecryptUpdate(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DecryptFinal(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DigestInit(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_Digest(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DigestUpdate(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DigestKey(
    _arg1: CK_SESSION_HANDLE,
    _arg2: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DigestFinal(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_SignRecoverInit(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_SignRecover(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_VerifyInit(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_Verify(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_VerifyUpdate(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_VerifyFinal(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_VerifyRecoverInit(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_VerifyRecover(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DigestEncryptUpdate(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DecryptDigestUpdate(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_SignEncryptUpdate(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DecryptVerifyUpdate(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_BYTE,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_GenerateKey(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: *mut CK_ATTRIBUTE,
    _arg4: CK_ULONG,
    _arg5: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_GenerateKeyPair(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: *mut CK_ATTRIBUTE,
    _arg4: CK_ULONG,
    _arg5: *mut CK_ATTRIBUTE,
    _arg6: CK_ULONG,
    _arg7: *mut CK_OBJECT_HANDLE,
    _arg8: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_WrapKey(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
    _arg4: CK_OBJECT_HANDLE,
    _arg5: *mut CK_BYTE,
    _arg6: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_UnwrapKey(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
    _arg6: *mut CK_ATTRIBUTE,
    _arg7: CK_ULONG,
    _arg8: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_MessageEncryptInit(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_EncryptMessage(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
    _arg6: *mut CK_BYTE,
    _arg7: CK_ULONG,
    _arg8: *mut CK_BYTE,
    _arg9: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_EncryptMessageBegin(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_EncryptMessageNext(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
    _arg6: *mut CK_BYTE,
    _arg7: *mut CK_ULONG,
    _arg8: CK_FLAGS,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_MessageEncryptFinal(_arg1: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_MessageDecryptInit(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DecryptMessage(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
    _arg6: *mut CK_BYTE,
    _arg7: CK_ULONG,
    _arg8: *mut CK_BYTE,
    _arg9: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DecryptMessageBegin(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_DecryptMessageNext(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
    _arg6: *mut CK_BYTE,
    _arg7: *mut CK_ULONG,
    _arg8: CK_FLAGS,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_MessageDecryptFinal(_arg1: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_MessageSignInit(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_SignMessage(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
    _arg6: *mut CK_BYTE,
    _arg7: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_SignMessageBegin(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_SignMessageNext(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
    _arg6: *mut CK_BYTE,
    _arg7: *mut CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_MessageSignFinal(_arg1: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_MessageVerifyInit(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut CK_MECHANISM,
    _arg3: CK_OBJECT_HANDLE,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_VerifyMessage(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
    _arg6: *mut CK_BYTE,
    _arg7: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_VerifyMessageBegin(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_VerifyMessageNext(
    _arg1: CK_SESSION_HANDLE,
    _arg2: *mut c_void,
    _arg3: CK_ULONG,
    _arg4: *mut CK_BYTE,
    _arg5: CK_ULONG,
    _arg6: *mut CK_BYTE,
    _arg7: CK_ULONG,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_MessageVerifyFinal(_arg1: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}
