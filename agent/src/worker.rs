//! The TPM belongs to one thread: tpm2-tss contexts are not `Send`, and without a resource
//! manager (swtpm's socket, a bare `/dev/tpm0`) one connection is all there is. Every card's
//! thread hands its TPM work to that thread and waits for the answer, so TPM commands of
//! different cards never interleave.

use std::sync::{mpsc, Arc};

use anyhow::{anyhow, Context, Result};
use zeroize::Zeroizing;

use crate::tpm::Tpm;

type Job = Box<dyn FnOnce(&mut Tpm) + Send>;

/// A handle on the TPM thread; clones share it. When the last clone goes, the thread ends
/// and the TPM connection is closed before the drop returns: a program that then starts
/// another (tpm2-tss does not open its sockets close-on-exec, so a child would inherit a
/// connection left open) or connects again finds the TPM free.
#[derive(Debug, Clone)]
pub struct TpmClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Hang up (the thread's loop ends), then wait for the connection to close.
        let (hung_up, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, hung_up));
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl TpmClient {
    /// Starts the TPM thread: connects through `tcti` and loads the storage primary
    /// (creating it on first use). Fails if the TPM cannot be reached.
    pub fn spawn(tcti: &str, owner_auth: Option<Zeroizing<Vec<u8>>>) -> Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let tcti = tcti.to_owned();
        let thread = std::thread::Builder::new()
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
        Ok(Self {
            inner: Arc::new(Inner {
                jobs,
                thread: Some(thread),
            }),
        })
    }

    /// Runs `f` on the TPM thread and returns what it returned.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tpm) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = mpsc::channel();
        self.inner
            .jobs
            .send(Box::new(move |tpm| {
                let _ = tx.send(f(tpm));
            }))
            .map_err(|_| anyhow!("the TPM thread has ended"))?;
        rx.recv()
            .map_err(|_| anyhow!("the TPM thread ended mid-command"))
    }
}
