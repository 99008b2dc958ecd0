//! Where herd's inputs live: checkpoints on Google Cloud Storage ([`gcs`]), the worker's local
//! checkpoint cache ([`cache`]) and datasets on the Hugging Face Hub ([`hub`]).

pub mod cache;
pub mod gcs;
pub mod hub;
