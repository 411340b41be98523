//! The implemented PKCS#11 functions: argument checking and marshalling around the safe
//! module in `tessera_pkcs11_core::module`.

#![allow(non_snake_case)]

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use tessera_pkcs11_core::mechanism::SignScheme;
use tessera_pkcs11_core::module::{self, AttrResult, PcscBackend};
use tessera_pkcs11_core::sys::*;
use tessera_pkcs11_core::{Error, Result};

use crate::lists::{FUNCTION_LIST, FUNCTION_LIST_3_0};

/// The panic boundary: no panic crosses `extern "C"` (the module is loaded into browsers,
/// sshd and login managers); an error becomes its `CK_RV`.
fn guard(f: impl FnOnce() -> Result<()>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(e)) => e.rv(),
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// A caller's output pointer, checked for NULL.
unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T> {
    p.as_mut().ok_or(Error::ArgumentsBad("NULL output pointer"))
}

/// A caller's input buffer; NULL is allowed only with length 0.
unsafe fn input<'a, T>(p: *const T, len: CK_ULONG) -> Result<&'a [T]> {
    let len = usize::try_from(len).map_err(|_| Error::ArgumentsBad("length"))?;
    // A slice may not exceed isize::MAX bytes; CK_UNAVAILABLE_INFORMATION (reused from a
    // C_GetAttributeValue answer) lands here too.
    if len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(Error::ArgumentsBad("length out of range"));
    }
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::ArgumentsBad("NULL input buffer"));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// Writes `data` to a caller's buffer following PKCS#11 §5.2: NULL buffer asks for the
/// length; a short buffer gets `CKR_BUFFER_TOO_SMALL` and the needed length.
unsafe fn write_out(data: &[u8], buf: *mut CK_BYTE, len: *mut CK_ULONG) -> CK_RV {
    let Some(len) = len.as_mut() else {
        return CKR_ARGUMENTS_BAD;
    };
    let have = *len as usize;
    *len = data.len() as CK_ULONG;
    if buf.is_null() {
        return CKR_OK;
    }
    if have < data.len() {
        return CKR_BUFFER_TOO_SMALL;
    }
    std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
    CKR_OK
}

/// Writes a list of handles (slots, mechanisms, objects) the same way.
unsafe fn write_list(items: &[CK_ULONG], buf: *mut CK_ULONG, len: *mut CK_ULONG) -> CK_RV {
    let Some(len) = len.as_mut() else {
        return CKR_ARGUMENTS_BAD;
    };
    let have = *len as usize;
    *len = items.len() as CK_ULONG;
    if buf.is_null() {
        return CKR_OK;
    }
    if have < items.len() {
        return CKR_BUFFER_TOO_SMALL;
    }
    std::ptr::copy_nonoverlapping(items.as_ptr(), buf, items.len());
    CKR_OK
}

/// A fixed-width, blank-padded PKCS#11 string field.
fn pad<const N: usize>(s: &str) -> [CK_UTF8CHAR; N] {
    let mut out = [b' '; N];
    // Cut on a character boundary so the field stays valid UTF-8.
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

const VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

pub(crate) unsafe extern "C" fn C_Initialize(args: *mut c_void) -> CK_RV {
    guard(|| {
        if let Some(a) = (args as *const CK_C_INITIALIZE_ARGS).as_ref() {
            if !a.pReserved.is_null() {
                return Err(Error::ArgumentsBad("pReserved must be NULL"));
            }
            let given = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
                return Err(Error::ArgumentsBad("mutex functions all or none"));
            }
            // PKCS#11 §5.4: with only the application's mutex functions and no
            // CKF_OS_LOCKING_OK we cannot lock: we use the OS's primitives only.
            if given[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::CantLock);
            }
        }
        module::initialize(Box::new(PcscBackend))
    })
}

pub(crate) unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(Error::ArgumentsBad("pReserved must be NULL"));
        }
        module::finalize()
    })
}

pub(crate) unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    guard(|| {
        let info = out(info)?;
        module::with(|_| Ok(()))?;
        *info = CK_INFO {
            cryptokiVersion: CK_VERSION { major: 3, minor: 0 },
            manufacturerID: pad("Tessera"),
            flags: 0,
            libraryDescription: pad("Tessera PIV PKCS#11 module"),
            libraryVersion: VERSION,
        };
        Ok(())
    })
}

/// PKCS#11 2.40 entry point.
///
/// # Safety
/// `list` must be NULL or point to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard(|| {
        *out(list)? = std::ptr::addr_of!(FUNCTION_LIST) as *mut CK_FUNCTION_LIST;
        Ok(())
    })
}

/// `CK_INTERFACE` holds raw pointers, so a static needs this wrapper to be shared; the
/// pointers are to immutable statics.
struct Interface(CK_INTERFACE);
// SAFETY: the pointers in it point to immutable statics that live for the whole program.
unsafe impl Sync for Interface {}

static INTERFACE_NAME: &[u8] = b"PKCS 11\0";
static INTERFACE_3_0: Interface = Interface(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
    pFunctionList: std::ptr::addr_of!(FUNCTION_LIST_3_0) as *mut c_void,
    flags: 0,
});
static INTERFACE_2_40: Interface = Interface(CK_INTERFACE {
    pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
    pFunctionList: std::ptr::addr_of!(FUNCTION_LIST) as *mut c_void,
    flags: 0,
});

/// PKCS#11 3.0 entry point: the interfaces offered.
///
/// # Safety
/// `count` must be NULL or writable; `list`, when not NULL, must have room for `*count`
/// interfaces.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterfaceList(
    list: *mut CK_INTERFACE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let count = out(count)?;
        let all = [INTERFACE_3_0.0, INTERFACE_2_40.0];
        if list.is_null() {
            *count = all.len() as CK_ULONG;
            return Ok(());
        }
        if (*count as usize) < all.len() {
            *count = all.len() as CK_ULONG;
            return Err(Error::BufferTooSmall);
        }
        std::ptr::copy_nonoverlapping(all.as_ptr(), list, all.len());
        *count = all.len() as CK_ULONG;
        Ok(())
    })
}

/// PKCS#11 3.0 entry point: one interface by name and version.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string, `version` NULL or readable, and
/// `interface` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    interface: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    guard(|| {
        let interface = out(interface)?;
        if !name.is_null() {
            let wanted = std::ffi::CStr::from_ptr(name as *const std::ffi::c_char);
            if wanted.to_bytes() != b"PKCS 11" {
                return Err(Error::ArgumentsBad("unknown interface"));
            }
        }
        if flags != 0 {
            return Err(Error::ArgumentsBad("no interface has these flags"));
        }
        let chosen = match version.as_ref() {
            None => &INTERFACE_3_0,
            Some(v) if v.major == 3 && v.minor == 0 => &INTERFACE_3_0,
            Some(v) if v.major == 2 => &INTERFACE_2_40,
            Some(_) => return Err(Error::ArgumentsBad("unknown interface version")),
        };
        *interface = std::ptr::addr_of!(chosen.0) as *mut CK_INTERFACE;
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_GetSlotList(
    token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    let mut rv = CKR_OK;
    let r = guard(|| {
        let slots = module::with(|m| m.slot_list(token_present != CK_FALSE))?;
        rv = write_list(&slots, list, count);
        Ok(())
    });
    if r == CKR_OK {
        rv
    } else {
        r
    }
}

pub(crate) unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    guard(|| {
        let info = out(info)?;
        let s = module::with(|m| m.slot_info(slot))?;
        *info = CK_SLOT_INFO {
            slotDescription: pad(&s.description),
            manufacturerID: pad("PC/SC"),
            flags: CKF_REMOVABLE_DEVICE
                | CKF_HW_SLOT
                | if s.token_present {
                    CKF_TOKEN_PRESENT
                } else {
                    0
                },
            hardwareVersion: CK_VERSION { major: 0, minor: 0 },
            firmwareVersion: CK_VERSION { major: 0, minor: 0 },
        };
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_GetTokenInfo(
    slot: CK_SLOT_ID,
    info: *mut CK_TOKEN_INFO,
) -> CK_RV {
    guard(|| {
        let info = out(info)?;
        let t = module::with(|m| m.token_info(slot))?;
        *info = CK_TOKEN_INFO {
            label: pad(&t.label),
            manufacturerID: pad("Tessera"),
            model: pad("PIV"),
            serialNumber: pad(&t.serial),
            flags: t.flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: t.sessions as CK_ULONG,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: t.rw_sessions as CK_ULONG,
            ulMaxPinLen: 8,
            ulMinPinLen: 6,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: CK_VERSION { major: 0, minor: 0 },
            firmwareVersion: CK_VERSION { major: 0, minor: 0 },
            utcTime: [b' '; 16],
        };
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    let mut rv = CKR_OK;
    let r = guard(|| {
        let mechs = module::with(|m| m.mechanisms(slot))?;
        rv = write_list(&mechs, list, count);
        Ok(())
    });
    if r == CKR_OK {
        rv
    } else {
        r
    }
}

pub(crate) unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard(|| {
        let info = out(info)?;
        let (min, max, flags) = module::with(|m| m.mechanism_info(slot, mech))?;
        *info = CK_MECHANISM_INFO {
            ulMinKeySize: min as CK_ULONG,
            ulMaxKeySize: max as CK_ULONG,
            flags,
        };
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        let session = out(session)?;
        *session = module::with(|m| m.open_session(slot, flags))?;
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module::with(|m| m.close_session(session)))
}

pub(crate) unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    guard(|| module::with(|m| m.close_all_sessions(slot)))
}

pub(crate) unsafe extern "C" fn C_GetSessionInfo(
    session: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    guard(|| {
        let info = out(info)?;
        let (slot, state, flags) = module::with(|m| m.session_info(session))?;
        *info = CK_SESSION_INFO {
            slotID: slot,
            state,
            flags,
            ulDeviceError: 0,
        };
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_Login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // No protected authentication path: the PIN must be given.
        if pin.is_null() {
            return Err(Error::ArgumentsBad("NULL PIN"));
        }
        let pin = input(pin, pin_len)?;
        module::with(|m| m.login(session, user, pin))
    })
}

pub(crate) unsafe extern "C" fn C_LoginUser(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    _username: *mut CK_UTF8CHAR,
    _username_len: CK_ULONG,
) -> CK_RV {
    // PIV has one PIN and no user names (PKCS#11 3.0 §5.6: the name may be ignored).
    C_Login(session, user, pin, pin_len)
}

pub(crate) unsafe extern "C" fn C_InitPIN(
    session: CK_SESSION_HANDLE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        if pin.is_null() {
            return Err(Error::ArgumentsBad("NULL PIN"));
        }
        let pin = input(pin, len)?;
        module::with(|m| m.init_pin(session, pin))
    })
}

pub(crate) unsafe extern "C" fn C_SetPIN(
    session: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        if old.is_null() || new.is_null() {
            return Err(Error::ArgumentsBad("NULL PIN"));
        }
        let (old, new) = (input(old, old_len)?, input(new, new_len)?);
        module::with(|m| m.set_pin(session, old, new))
    })
}

pub(crate) unsafe extern "C" fn C_Logout(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module::with(|m| m.logout(session)))
}

/// PKCS#11 §5.5: with `CKF_DONT_BLOCK` answers at once (`CKR_NO_EVENT` if no token came or
/// went); otherwise waits, without blocking the module's other calls, until one does or
/// C_Finalize is called.
pub(crate) unsafe extern "C" fn C_WaitForSlotEvent(
    flags: CK_FLAGS,
    slot: *mut CK_SLOT_ID,
    reserved: *mut c_void,
) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(Error::ArgumentsBad("pReserved must be NULL"));
        }
        let slot = out(slot)?;
        *slot = module::wait_for_slot_event(flags & CKF_DONT_BLOCK == 0)?;
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_SessionCancel(
    _session: CK_SESSION_HANDLE,
    _flags: CK_FLAGS,
) -> CK_RV {
    CKR_FUNCTION_NOT_SUPPORTED
}

pub(crate) unsafe extern "C" fn C_GetFunctionStatus(_session: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

pub(crate) unsafe extern "C" fn C_CancelFunction(_session: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

/// Reads a caller's template into (type, value) pairs.
unsafe fn template(
    t: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>> {
    input(t, count)?
        .iter()
        .map(|a| {
            Ok((
                a.type_,
                input(a.pValue as *const u8, a.ulValueLen)?.to_vec(),
            ))
        })
        .collect()
}

pub(crate) unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    attrs: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    let mut rv = CKR_OK;
    let r = guard(|| {
        if attrs.is_null() && count > 0 {
            return Err(Error::ArgumentsBad("NULL template"));
        }
        let n = usize::try_from(count).map_err(|_| Error::ArgumentsBad("count"))?;
        if n > isize::MAX as usize / std::mem::size_of::<CK_ATTRIBUTE>() {
            return Err(Error::ArgumentsBad("count out of range"));
        }
        let slots: &mut [CK_ATTRIBUTE] = if n == 0 {
            &mut []
        } else {
            std::slice::from_raw_parts_mut(attrs, n)
        };
        let types: Vec<_> = slots.iter().map(|a| a.type_).collect();
        let values = module::with(|m| m.attributes(session, object, &types))?;
        // PKCS#11 §5.7 C_GetAttributeValue: each attribute is processed; the call reports
        // the most significant problem.
        for (a, v) in slots.iter_mut().zip(values) {
            match v {
                AttrResult::Value(bytes) => {
                    if a.pValue.is_null() {
                        a.ulValueLen = bytes.len() as CK_ULONG;
                    } else if (a.ulValueLen as usize) < bytes.len() {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        rv = CKR_BUFFER_TOO_SMALL;
                    } else {
                        std::ptr::copy_nonoverlapping(
                            bytes.as_ptr(),
                            a.pValue as *mut u8,
                            bytes.len(),
                        );
                        a.ulValueLen = bytes.len() as CK_ULONG;
                    }
                }
                AttrResult::Sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = CKR_ATTRIBUTE_SENSITIVE;
                }
                AttrResult::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    if rv == CKR_OK {
                        rv = CKR_ATTRIBUTE_TYPE_INVALID;
                    }
                }
            }
        }
        Ok(())
    });
    if r == CKR_OK {
        rv
    } else {
        r
    }
}

pub(crate) unsafe extern "C" fn C_FindObjectsInit(
    session: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let t = template(t, count)?;
        module::with(|m| m.find_init(session, &t))
    })
}

pub(crate) unsafe extern "C" fn C_FindObjects(
    session: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let count = out(count)?;
        if objects.is_null() && max > 0 {
            return Err(Error::ArgumentsBad("NULL object buffer"));
        }
        let found = module::with(|m| m.find(session, max as usize))?;
        if !found.is_empty() {
            std::ptr::copy_nonoverlapping(found.as_ptr(), objects, found.len());
        }
        *count = found.len() as CK_ULONG;
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| module::with(|m| m.find_final(session)))
}

/// The scheme of a caller's mechanism, reading PSS parameters when present.
unsafe fn scheme(mech: *mut CK_MECHANISM) -> Result<SignScheme> {
    let mech = mech.as_ref().ok_or(Error::ArgumentsBad("NULL mechanism"))?;
    let pss = if mech.pParameter.is_null() {
        None
    } else {
        if mech.ulParameterLen as usize != std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>() {
            return Err(Error::MechanismParamInvalid);
        }
        let p = std::ptr::read_unaligned(mech.pParameter as *const CK_RSA_PKCS_PSS_PARAMS);
        Some((p.hashAlg, p.mgf, p.sLen))
    };
    SignScheme::from_mechanism(mech.mechanism, pss)
}

pub(crate) unsafe extern "C" fn C_SignInit(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let scheme = scheme(mech)?;
        module::with(|m| m.sign_init(session, scheme, key))
    })
}

/// C_Sign and C_SignFinal: a length query or a short buffer leaves the operation active
/// (PKCS#11 §5.2); anything else ends it.
unsafe fn finish_sign(
    session: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    let mut rv = CKR_OK;
    let r = guard(|| {
        let sig_len = out(sig_len)?;
        let needed = module::with(|m| m.signature_len(session))?;
        if sig.is_null() || (*sig_len as usize) < needed {
            rv = if sig.is_null() {
                CKR_OK
            } else {
                CKR_BUFFER_TOO_SMALL
            };
            *sig_len = needed as CK_ULONG;
            return Ok(());
        }
        let signature = module::with(|m| m.sign(session, data))?;
        rv = write_out(&signature, sig, sig_len);
        Ok(())
    });
    if r == CKR_OK {
        rv
    } else {
        r
    }
}

pub(crate) unsafe extern "C" fn C_Sign(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    match input(data, data_len) {
        Ok(d) => finish_sign(session, Some(d), sig, sig_len),
        Err(e) => e.rv(),
    }
}

pub(crate) unsafe extern "C" fn C_SignUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let part = input(part, len)?;
        module::with(|m| m.sign_update(session, part))
    })
}

pub(crate) unsafe extern "C" fn C_SignFinal(
    session: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    finish_sign(session, None, sig, sig_len)
}

pub(crate) unsafe extern "C" fn C_DeriveKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let key = out(key)?;
        let mech = mech.as_ref().ok_or(Error::ArgumentsBad("NULL mechanism"))?;
        if mech.mechanism != CKM_ECDH1_DERIVE {
            return Err(Error::MechanismInvalid);
        }
        if mech.pParameter.is_null()
            || mech.ulParameterLen as usize != std::mem::size_of::<CK_ECDH1_DERIVE_PARAMS>()
        {
            return Err(Error::MechanismParamInvalid);
        }
        let params = std::ptr::read_unaligned(mech.pParameter as *const CK_ECDH1_DERIVE_PARAMS);
        // CKD_NULL only: the shared secret itself, no key derivation function.
        if params.kdf != CKD_NULL || params.ulSharedDataLen != 0 {
            return Err(Error::MechanismParamInvalid);
        }
        let peer = input(params.pPublicData as *const u8, params.ulPublicDataLen)?;
        let t = template(t, count)?;
        *key = module::with(|m| m.derive(session, base, peer, &t))?;
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_DestroyObject(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| module::with(|m| m.destroy(session, object)))
}

pub(crate) unsafe extern "C" fn C_DecryptInit(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let mech = mech.as_ref().ok_or(Error::ArgumentsBad("NULL mechanism"))?;
        module::with(|m| m.decrypt_init(session, mech.mechanism, key))
    })
}

pub(crate) unsafe extern "C" fn C_Decrypt(
    session: CK_SESSION_HANDLE,
    enc: *mut CK_BYTE,
    enc_len: CK_ULONG,
    data: *mut CK_BYTE,
    data_len: *mut CK_ULONG,
) -> CK_RV {
    let mut rv = CKR_OK;
    let r = guard(|| {
        let enc = input(enc, enc_len)?;
        let len = out(data_len)?;
        let capacity = (!data.is_null()).then_some(*len as usize);
        match module::with(|m| m.decrypt(session, enc, capacity))? {
            module::DecryptStep::Done(plain) => rv = write_out(&plain, data, len),
            module::DecryptStep::Needs(n) => {
                *len = n as CK_ULONG;
                if !data.is_null() {
                    rv = CKR_BUFFER_TOO_SMALL;
                }
            }
        }
        Ok(())
    });
    if r == CKR_OK {
        rv
    } else {
        r
    }
}

pub(crate) unsafe extern "C" fn C_GenerateRandom(
    session: CK_SESSION_HANDLE,
    buf: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        if buf.is_null() && len > 0 {
            return Err(Error::ArgumentsBad("NULL buffer"));
        }
        let bytes = module::with(|m| m.random(session, len as usize))?;
        if !bytes.is_empty() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
        }
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn C_SeedRandom(
    _session: CK_SESSION_HANDLE,
    _seed: *mut CK_BYTE,
    _len: CK_ULONG,
) -> CK_RV {
    CKR_RANDOM_SEED_NOT_SUPPORTED
}
