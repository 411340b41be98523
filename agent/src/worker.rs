//! The TPM belongs to one thread: tpm2-tss contexts are not `Send`, and without a resource
//! manager (swtpm's socket, a bare `/dev/tpm0`) one connection is all there is. Every card's
//! thread hands its TPM work to that thread and waits for the answer, so TPM commands of
//! different cards never interleave.

use std::sync::mpsc;

use anyhow::{anyhow, Context, Result};
use zeroize::Zeroizing;

use crate::tpm::Tpm;

type Job = Box<dyn FnOnce(&mut Tpm) + Send>;

/// A handle on the TPM thread; clones share it.
#[derive(Debug, Clone)]
pub struct TpmClient {
    jobs: mpsc::Sender<Job>,
}

impl TpmClient {
    /// Starts the TPM thread: connects through `tcti` and loads the storage primary
    /// (creating it on first use). Fails if the TPM cannot be reached.
    pub fn spawn(tcti: &str, owner_auth: Option<Zeroizing<Vec<u8>>>) -> Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let tcti = tcti.to_owned();
        std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut tpm = match Tpm::open(&tcti, owner_auth) {
                    Ok(t) => {
                        let _ = ready_tx.send(Ok(()));
                        t
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in rx {
                    job(&mut tpm);
                }
            })
            .context("starting the TPM thread")?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the TPM thread ended before it was ready"))?
            .context("opening the TPM")?;
        Ok(Self { jobs })
    }

    /// Runs `f` on the TPM thread and returns what it returned.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tpm) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send(Box::new(move |tpm| {
                let _ = tx.send(f(tpm));
            }))
            .map_err(|_| anyhow!("the TPM thread has ended"))?;
        rx.recv()
            .map_err(|_| anyhow!("the TPM thread ended mid-command"))
    }
}
