//! The module's error type: each variant is one PKCS#11 return value, so the FFI layer maps
//! errors to `CK_RV` in one place ([`Error::rv`]).

use cryptoki_sys as sys;
use thiserror::Error;

/// A PKCS#11 failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("module not initialized")]
    NotInitialized,
    #[error("module already initialized")]
    AlreadyInitialized,
    #[error("bad arguments: {0}")]
    ArgumentsBad(&'static str),
    #[error("no such slot")]
    SlotIdInvalid,
    #[error("no token in the slot")]
    TokenNotPresent,
    #[error("the token was removed")]
    DeviceRemoved,
    /// Another program reset the card: retried once by the module after it re-selects PIV
    /// and drops the login the reset cleared; seen by the caller only if it happens again.
    #[error("the card was reset by another program")]
    CardReset,
    /// The card hold kept across calls (a context-specific login waiting for its operation)
    /// outlasted the transport's limit and the card went to other programs: the module
    /// ends the hold and retries once; the PIN-always login is gone with it.
    #[error("the card hold lapsed")]
    HoldLapsed,
    /// The connection was given up after waiting too long for the card: the module
    /// connects again; seen by the caller while another program still holds the card.
    #[error("the card is in use by another program; try again")]
    Busy,
    #[error("no slot event")]
    NoEvent,
    #[error("function failed: {0}")]
    FunctionFailed(&'static str),
    #[error("device error: {0}")]
    DeviceError(String),
    #[error("no such session")]
    SessionHandleInvalid,
    #[error("no such object")]
    ObjectHandleInvalid,
    #[error("wrong PIN")]
    PinIncorrect,
    #[error("PIN blocked")]
    PinLocked,
    #[error("PIN length out of range")]
    PinLenRange,
    #[error("user already logged in")]
    UserAlreadyLoggedIn,
    #[error("another user type is logged in")]
    UserAnotherAlreadyLoggedIn,
    #[error("user not logged in")]
    UserNotLoggedIn,
    #[error("user type invalid")]
    UserTypeInvalid,
    #[error("mechanism not supported")]
    MechanismInvalid,
    #[error("mechanism parameters invalid")]
    MechanismParamInvalid,
    #[error("key type does not fit the mechanism")]
    KeyTypeInconsistent,
    #[error("key cannot be used for this function")]
    KeyFunctionNotPermitted,
    #[error("an operation is already active")]
    OperationActive,
    #[error("no operation initialized")]
    OperationNotInitialized,
    #[error("input length out of range")]
    DataLenRange,
    #[error("encrypted data invalid")]
    EncryptedDataInvalid,
    #[error("function not supported")]
    FunctionNotSupported,
    #[error("token is write-protected")]
    TokenWriteProtected,
    #[error("action prohibited on this object")]
    ActionProhibited,
    #[error("session is read-only")]
    SessionReadOnly,
    #[error("a read-only session exists; the security officer needs read-write sessions")]
    SessionReadOnlyExists,
    #[error("attribute value invalid")]
    AttributeValueInvalid,
    #[error("template inconsistent")]
    TemplateInconsistent,
    #[error("parallel sessions are required (CKF_SERIAL_SESSION)")]
    SessionParallelNotSupported,
    #[error("random data not available")]
    RandomNoRng,
    #[error("the application's locking cannot be used; allow CKF_OS_LOCKING_OK")]
    CantLock,
    #[error("output buffer too small")]
    BufferTooSmall,
    #[error("internal error: {0}")]
    General(String),
}

/// Shorthand for results of the module.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The PKCS#11 return value for this error.
    pub fn rv(&self) -> sys::CK_RV {
        match self {
            Self::NotInitialized => sys::CKR_CRYPTOKI_NOT_INITIALIZED,
            Self::AlreadyInitialized => sys::CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Self::ArgumentsBad(_) => sys::CKR_ARGUMENTS_BAD,
            Self::SlotIdInvalid => sys::CKR_SLOT_ID_INVALID,
            Self::TokenNotPresent => sys::CKR_TOKEN_NOT_PRESENT,
            Self::DeviceRemoved => sys::CKR_DEVICE_REMOVED,
            Self::CardReset => sys::CKR_DEVICE_ERROR,
            // Seen only if the retry lapses too; the holder's C_Sign finds its context
            // login gone on the retry and answers CKR_USER_NOT_LOGGED_IN itself.
            Self::HoldLapsed => sys::CKR_DEVICE_ERROR,
            Self::Busy => sys::CKR_DEVICE_ERROR,
            Self::NoEvent => sys::CKR_NO_EVENT,
            Self::FunctionFailed(_) => sys::CKR_FUNCTION_FAILED,
            Self::DeviceError(_) => sys::CKR_DEVICE_ERROR,
            Self::SessionHandleInvalid => sys::CKR_SESSION_HANDLE_INVALID,
            Self::ObjectHandleInvalid => sys::CKR_OBJECT_HANDLE_INVALID,
            Self::PinIncorrect => sys::CKR_PIN_INCORRECT,
            Self::PinLocked => sys::CKR_PIN_LOCKED,
            Self::PinLenRange => sys::CKR_PIN_LEN_RANGE,
            Self::UserAlreadyLoggedIn => sys::CKR_USER_ALREADY_LOGGED_IN,
            Self::UserAnotherAlreadyLoggedIn => sys::CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
            Self::UserNotLoggedIn => sys::CKR_USER_NOT_LOGGED_IN,
            Self::UserTypeInvalid => sys::CKR_USER_TYPE_INVALID,
            Self::MechanismInvalid => sys::CKR_MECHANISM_INVALID,
            Self::MechanismParamInvalid => sys::CKR_MECHANISM_PARAM_INVALID,
            Self::KeyTypeInconsistent => sys::CKR_KEY_TYPE_INCONSISTENT,
            Self::KeyFunctionNotPermitted => sys::CKR_KEY_FUNCTION_NOT_PERMITTED,
            Self::OperationActive => sys::CKR_OPERATION_ACTIVE,
            Self::OperationNotInitialized => sys::CKR_OPERATION_NOT_INITIALIZED,
            Self::DataLenRange => sys::CKR_DATA_LEN_RANGE,
            Self::EncryptedDataInvalid => sys::CKR_ENCRYPTED_DATA_INVALID,
            Self::FunctionNotSupported => sys::CKR_FUNCTION_NOT_SUPPORTED,
            Self::TokenWriteProtected => sys::CKR_TOKEN_WRITE_PROTECTED,
            Self::ActionProhibited => sys::CKR_ACTION_PROHIBITED,
            Self::SessionReadOnly => sys::CKR_SESSION_READ_ONLY,
            Self::SessionReadOnlyExists => sys::CKR_SESSION_READ_ONLY_EXISTS,
            Self::AttributeValueInvalid => sys::CKR_ATTRIBUTE_VALUE_INVALID,
            Self::TemplateInconsistent => sys::CKR_TEMPLATE_INCONSISTENT,
            Self::SessionParallelNotSupported => sys::CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            Self::RandomNoRng => sys::CKR_RANDOM_NO_RNG,
            Self::CantLock => sys::CKR_CANT_LOCK,
            Self::BufferTooSmall => sys::CKR_BUFFER_TOO_SMALL,
            Self::General(_) => sys::CKR_GENERAL_ERROR,
        }
    }
}

impl From<tessera_piv::host::Error> for Error {
    fn from(e: tessera_piv::host::Error) -> Self {
        use tessera_piv::host::Error as H;
        match e {
            H::Removed => Self::DeviceRemoved,
            H::Reset => Self::CardReset,
            H::Busy => Self::Busy,
            H::Lapsed => Self::HoldLapsed,
            other => Self::DeviceError(other.to_string()),
        }
    }
}
