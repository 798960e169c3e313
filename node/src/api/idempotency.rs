//! Idempotency keys (`Idempotency-Key` on `POST /v1/readings`, ADR 015): a retried
//! request with the same key and body gets the first answer again — at the node that
//! stored it or at any other node of the consortium — a different body with the same key
//! is refused (422), and one still being stored is refused (409
//! `idempotency_in_progress`, which the client retries). The claims live in the record
//! layer (`records::claims`), which asks every validator; this module names the header
//! and the answers.

use axum::http::StatusCode;

use super::error::ApiError;

/// The header carrying an idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// 422 `idempotency_key_reused`.
pub(super) fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this idempotency key was used for a different body",
    )
    .field(IDEMPOTENCY_HEADER)
}

/// 409 `idempotency_in_progress`.
pub(super) fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "a request with this idempotency key is still being stored (at this or another node); try again",
    )
    .field(IDEMPOTENCY_HEADER)
}
