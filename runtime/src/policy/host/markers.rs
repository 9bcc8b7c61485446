//! The host types behind the WIT resources the host defines. A handle's
//! `rep` is not used by the view resources (a policy instance serves one
//! request at a time, kept in the store's data); for expressions it
//! indexes the instance's compiled expressions.

/// Marker type for `types.request` handles.
pub struct RequestView;
/// Marker type for `types.response` handles.
pub struct ResponseView;
/// Marker type for `types.connection` handles.
pub struct ConnectionView;
/// Marker type for `expressions.expression` handles; the `rep` indexes
/// [`super::HostState::expressions`].
pub struct ExpressionHandle;
/// Marker type for `certificates.issuer` handles; the `rep` indexes
/// [`super::HostState::issuers`].
pub struct IssuerHandle;
/// Marker type for `counters.counter` handles.
pub struct CounterHandle;
/// Marker type for `jose.key` handles.
pub struct VerifyKeyHandle;
/// Marker type for `jose.key-set` handles.
pub struct KeySetHandle;
/// Marker type for `jose.decryption-key` handles.
pub struct DecryptionKeyHandle;
