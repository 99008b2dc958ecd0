//! A TCP proxy on 127.0.0.1 that can cut every connection through it, to drop a worker's
//! connection to the coordinator mid-sweep without stopping either process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepted: Arc<AtomicUsize>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let tracked = connections.clone();
        let counted = accepted.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut connections = tracked.lock().expect("proxy lock");
                connections.retain(|task| !task.is_finished());
                connections.push(task);
            }
        });
        Ok(Proxy {
            addr,
            connections,
            accepted,
            acceptor,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Cuts every open connection (both sides lose the stream); new connections still work.
    /// Returns how many live streams were cut (connections that had already ended not counted).
    pub fn sever(&self) -> usize {
        let mut connections = self.connections.lock().expect("proxy lock");
        let mut live = 0;
        for task in connections.drain(..) {
            if !task.is_finished() {
                task.abort();
                live += 1;
            }
        }
        live
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.sever();
        self.acceptor.abort();
    }
}
