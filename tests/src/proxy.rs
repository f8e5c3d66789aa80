//! A TCP proxy on 127.0.0.1 for fault scenarios: a round-robin balancer in front of several
//! replicas (a backend that refuses the connection is skipped, as a load balancer's health
//! check would), and a switch that makes a service unreachable, cutting every open connection
//! and refusing new ones, as a restart looks to its clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    down: AtomicBool,
    /// Bumped to cut every open connection.
    cuts: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            backends,
            next: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            cuts: watch::channel(0).0,
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if s.down.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                tokio::spawn(serve(s.clone(), client));
            }
        });
        Ok(Proxy { port, shared, task })
    }

    /// Unreachable (`true`: open connections cut, new ones closed at once) or back.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.shared.cuts.send_modify(|n| *n += 1);
        }
    }
}

async fn serve(s: Arc<Shared>, mut client: TcpStream) {
    let mut cut = s.cuts.subscribe();
    let start = s.next.fetch_add(1, Ordering::Relaxed);
    for i in 0..s.backends.len() {
        let addr = s.backends[(start + i) % s.backends.len()];
        let Ok(mut upstream) = TcpStream::connect(addr).await else {
            continue;
        };
        let _ = upstream.set_nodelay(true);
        let _ = client.set_nodelay(true);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = cut.changed() => {}
        }
        return;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.set_down(true);
    }
}
