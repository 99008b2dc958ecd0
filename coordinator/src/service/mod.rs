//! The gRPC services, thin adapters over the application layer: [`workers::WorkersService`] (what
//! GPU workers call) and [`sweeps::SweepsService`] (what `coord submit/status/results/cancel`
//! call). Each checks the request, converts it to domain types ([`convert`]), calls
//! [`crate::app::Coordinator`] or its store, and converts the answer back.

pub mod convert;
pub mod sweeps;
pub mod workers;

use tonic::Status;

use crate::app::AppError;
use crate::state::StoreError;

pub use sweeps::SweepsService;
pub use workers::WorkersService;

/// A sweep name from a request, checked against the sweep-name rule (INVALID_ARGUMENT naming it).
pub fn sweep_name(name: &str) -> Result<(), Status> {
    crate::domain::check_sweep_name(name).map_err(Status::invalid_argument)
}

/// Store errors as gRPC statuses.
pub fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::UnknownWorker(_) | StoreError::NotFound(_) => Status::not_found(e.to_string()),
        StoreError::StaleLease(_) | StoreError::Precondition(_) => {
            Status::failed_precondition(e.to_string())
        }
        StoreError::Forbidden(_) => Status::permission_denied(e.to_string()),
        StoreError::Invalid(_) => Status::invalid_argument(e.to_string()),
        StoreError::Db(_) | StoreError::Corrupt(_) => Status::internal(e.to_string()),
    }
}

/// Application errors as gRPC statuses: a sweep that cannot be planned is the request's fault
/// (INVALID_ARGUMENT), a lost background task the server's (INTERNAL).
impl From<AppError> for Status {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Store(e) => to_status(e),
            AppError::Plan(message) => Status::invalid_argument(message),
            AppError::Task(message) => Status::internal(message),
        }
    }
}
