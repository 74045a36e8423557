//! The one place that turns domain and storage errors into `tonic::Status`.
//! Database details are logged here and never sent to the caller.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use keyward_proto::codec::invalid_argument;

use crate::key_management::ManagementError;

impl From<ManagementError> for Status {
    fn from(error: ManagementError) -> Self {
        match error {
            ManagementError::Invalid { field, reason } => invalid_argument(field, reason),
            ManagementError::NotFound => Status::not_found(error.to_string()),
            ManagementError::KeyLimitReached { limit } => Status::with_error_details(
                Code::FailedPrecondition,
                error.to_string(),
                ErrorDetails::with_precondition_failure_violation(
                    "KEY_LIMIT",
                    "account",
                    format!("at most {limit} active keys per account"),
                ),
            ),
            ManagementError::KeyRevoked
            | ManagementError::KeyExpired
            | ManagementError::AlreadyRotated { .. } => {
                Status::failed_precondition(error.to_string())
            }
            ManagementError::InvalidAt { field, reason } => invalid_argument(&field, reason),
            ManagementError::AlreadyExists { .. } => Status::already_exists(error.to_string()),
            ManagementError::ImportLimitReached { ref account, limit } => {
                Status::with_error_details(
                    Code::FailedPrecondition,
                    error.to_string(),
                    ErrorDetails::with_precondition_failure_violation(
                        "KEY_LIMIT",
                        account.as_str(),
                        format!("at most {limit} active keys per account"),
                    ),
                )
            }
            ManagementError::Storage(error) => {
                tracing::error!(%error, "storage failure");
                Status::unavailable("storage is unavailable; retry later")
            }
            ManagementError::Random(error) => {
                tracing::error!(%error, "random number generator failure");
                Status::internal("could not generate a key")
            }
        }
    }
}
