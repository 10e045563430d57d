//! Hard limits of the format. The engine may enforce tighter, configurable limits on input; these
//! are the most a decoder accepts from disk, so corrupt lengths cannot make it allocate or loop
//! without bound.

/// Entity key length, bytes (the API's limit: 1..=256).
pub const ENTITY_BYTES_MAX: usize = 256;
/// Kind length, bytes (the API's limit: 1..=128).
pub const KIND_BYTES_MAX: usize = 128;
/// Number of tags on one event (the API's limit: 0..=32).
pub const TAGS_COUNT_MAX: usize = 32;
/// One tag's length, bytes (the API's limit: 1..=256).
pub const TAG_BYTES_MAX: usize = 256;
/// Idempotency key length, bytes (the API's limit: 1..=128).
pub const ID_BYTES_MAX: usize = 128;
/// Payload length the format can hold, bytes. The engine's default limit (1 MiB) is lower.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Decompressed size of one block, bytes. One record always fits in one block.
pub const BLOCK_RAW_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Stored (compressed or not) size of one block body, bytes.
pub const BLOCK_BODY_BYTES_MAX: usize = BLOCK_RAW_BYTES_MAX + 64 * 1024;
/// Records in one block.
pub const BLOCK_RECORDS_MAX: u32 = 1 << 20;
/// Records in one segment (ordinals are u32).
pub const SEGMENT_RECORDS_MAX: u32 = 1 << 30;
