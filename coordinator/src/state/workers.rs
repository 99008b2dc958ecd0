//! Workers: a worker is its registration (a fresh id and the digest of its secret).

use herd_rpc::v1::Capabilities;
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};

use super::{lock, Result, Store, StoreError};

impl Store {
    /// Registers a worker and returns its new id. Ids are never reused, and only `secret`'s
    /// digest is kept: the (id, secret) pair never changes, so [`Store::check_worker`] once per
    /// call is enough to bind every lease of the id to this registration.
    pub fn register(
        &self,
        name: &str,
        capabilities: &Capabilities,
        secret: &str,
        now: i64,
    ) -> Result<String> {
        let digest = crate::security::secret_digest(secret);
        let id = self.write(|tx| {
            let cached =
                serde_json::to_string(&capabilities.cached_checkpoints).expect("strings serialise");
            tx.execute(
                "INSERT INTO workers(name, capabilities, cached, registered_ms, last_seen_ms,
                                     secret_digest)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                params![name, capabilities.encode_to_vec(), cached, now, &digest[..]],
            )?;
            let seq = tx.last_insert_rowid();
            let id = format!("w{seq}");
            tx.execute(
                "UPDATE workers SET id = ?1 WHERE seq = ?2",
                params![id, seq],
            )?;
            Ok(id)
        })?;
        // committed: the worker's first calls need not read it back
        lock(&self.secrets).insert(id.clone(), digest.to_vec());
        Ok(id)
    }

    /// Checks that `secret` is the one `worker_id` registered with (constant time). An unknown
    /// id, or one registered before secrets existed, is UnknownWorker (the worker registers
    /// again); a wrong secret is Forbidden.
    pub fn check_worker(&self, worker_id: &str, secret: &str) -> Result<()> {
        let known = lock(&self.secrets).get(worker_id).cloned();
        let stored: Option<Option<Vec<u8>>> = match known {
            Some(digest) => Some(Some(digest)),
            None => {
                let stored: Option<Option<Vec<u8>>> = self
                    .snapshot()?
                    .query_row(
                        "SELECT secret_digest FROM workers WHERE id = ?1",
                        params![worker_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(Some(digest)) = &stored {
                    lock(&self.secrets).insert(worker_id.to_string(), digest.clone());
                }
                stored
            }
        };
        match stored {
            None => Err(StoreError::UnknownWorker(worker_id.to_string())),
            Some(None) => Err(StoreError::UnknownWorker(format!(
                "{worker_id} (registered without a secret)"
            ))),
            Some(Some(digest)) if crate::security::secret_matches(secret, &digest) => Ok(()),
            Some(Some(_)) => Err(StoreError::Forbidden(format!(
                "the worker secret does not match the registration of worker {worker_id}"
            ))),
        }
    }
}

/// `name (id)`, or the id of a worker registered without a name.
pub(super) fn worker_label(conn: &Connection, worker_id: &str) -> Result<String> {
    let name: Option<String> = conn
        .query_row(
            "SELECT name FROM workers WHERE id = ?1",
            params![worker_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match name {
        Some(name) if !name.is_empty() => format!("{name} ({worker_id})"),
        _ => worker_id.to_string(),
    })
}
