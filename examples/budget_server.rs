//! A TCP echo server that stays inside a memory budget, and a client that drives it.
//!
//! Every connection gets its 64 KiB buffer from one pool with a hard budget. When the budget is
//! used up, a new connection does not fail and the server does not grow: its handler waits in
//! `allocate_timeout` until another connection finishes and its buffer goes back to the pool
//! (backpressure). The client side opens more connections at once than the budget has buffers,
//! sends data on each, checks every echoed byte, and the example exits by itself. Loopback only
//! (127.0.0.1, a port the kernel picks).
//!
//! The async variant ([`run_async`]) does the same on one thread: a tokio runtime of one thread
//! runs the accept loop, every connection's handler and every client as tasks. A handler that
//! finds the budget used up awaits `allocate_async`, which parks the task (not the thread) until a
//! buffer is released, so hundreds of connections wait on one thread, served in arrival order.
//!
//! ```sh
//! cargo run --release --example budget_server
//! ```

use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use segpool::SegmentPool;

const BUFFER: usize = 64 << 10;
/// What the client sends per write before it reads the echo back.
const CHUNK: usize = 16 << 10;
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection waits for a buffer before the server gives up on it.
const BUFFER_WAIT: Duration = Duration::from_secs(30);

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

pub struct Config {
    /// Connections the client opens in total.
    pub connections: usize,
    /// Connections open at once (client threads).
    pub concurrency: usize,
    /// Bytes sent (and echoed) per connection.
    pub bytes_per_connection: usize,
    /// The server's buffer budget.
    pub budget: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connections: 64,
            concurrency: 16,
            bytes_per_connection: 1 << 20,
            budget: 512 << 10, // 8 buffers of 64 KiB for 16 connections at once
        }
    }
}

pub struct Report {
    pub connections: u64,
    pub bytes_echoed: u64,
    /// Connections whose handler had to wait for a buffer.
    pub waited: u64,
    pub peak_mapped: usize,
}

struct Server {
    pool: SegmentPool,
    served: AtomicU64,
    waited: AtomicU64,
    echoed: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Server {
    fn serve(&self, mut stream: TcpStream) -> Result<()> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut buf = match self.pool.allocate(BUFFER) {
            Ok(buf) => buf,
            Err(e) if matches!(e.kind(), segpool::ErrorKind::BudgetExceeded { .. }) => {
                // Backpressure: the client's bytes wait in the socket until a buffer is free.
                self.waited.fetch_add(1, Ordering::Relaxed);
                self.pool.allocate_timeout(BUFFER, BUFFER_WAIT)?
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            stream.write_all(&buf[..n])?;
            self.echoed.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(()) // `buf` goes back to the pool here
    }

    fn fail(&self, e: impl std::fmt::Display) {
        self.first_error
            .lock()
            .unwrap()
            .get_or_insert_with(|| e.to_string());
    }
}

/// Byte `k` of connection `c`'s stream.
fn byte(c: usize, k: usize) -> u8 {
    (c.wrapping_mul(131) ^ k ^ (k >> 8)) as u8
}

/// One client connection: send the stream in chunks, read each echo back and compare it.
fn client(addr: SocketAddr, c: usize, total: usize) -> Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let (mut out, mut back) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut sent = 0;
    while sent < total {
        let n = CHUNK.min(total - sent);
        for (k, b) in out[..n].iter_mut().enumerate() {
            *b = byte(c, sent + k);
        }
        s.write_all(&out[..n])?;
        s.read_exact(&mut back[..n])?;
        if back[..n] != out[..n] {
            return Err(format!("connection {c}: wrong echo at byte {sent}").into());
        }
        sent += n;
    }
    s.shutdown(Shutdown::Write)?;
    if s.read(&mut back)? != 0 {
        return Err(format!("connection {c}: extra bytes after the echo").into());
    }
    Ok(())
}

/// Starts the server on 127.0.0.1 (any port), runs the client loop against it, stops the server.
pub fn run(cfg: &Config) -> Result<Report> {
    let server = Server {
        // One thread per connection: per-thread caches would only strand free buffers in
        // threads that are about to exit.
        pool: SegmentPool::builder()
            .size_classes(&[BUFFER])
            .budget(cfg.budget)
            .thread_cache(false)
            .build()?,
        served: AtomicU64::new(0),
        waited: AtomicU64::new(0),
        echoed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        first_error: Mutex::new(None),
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let next = AtomicU64::new(0);

    let client_result = std::thread::scope(|s| {
        let server = &server;
        s.spawn(move || {
            for stream in listener.incoming() {
                if server.stop.load(Ordering::Acquire) {
                    break;
                }
                match stream {
                    Ok(stream) => {
                        s.spawn(move || {
                            if let Err(e) = server.serve(stream) {
                                server.fail(format!("server: {e}"));
                            }
                        });
                    }
                    Err(e) => server.fail(format!("accept: {e}")),
                }
            }
        });
        let clients: Vec<_> = (0..cfg.concurrency)
            .map(|_| {
                let next = &next;
                s.spawn(move || -> Result<()> {
                    loop {
                        let c = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if c >= cfg.connections {
                            return Ok(());
                        }
                        client(addr, c, cfg.bytes_per_connection)?;
                    }
                })
            })
            .collect();
        let r = clients
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| "a client panicked")?);
        // Wake the accept loop so it sees the stop flag.
        server.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(addr);
        r
    });
    client_result?;
    if let Some(e) = server.first_error.lock().unwrap().take() {
        return Err(e.into());
    }
    let report = Report {
        connections: server.served.load(Ordering::Relaxed),
        bytes_echoed: server.echoed.load(Ordering::Relaxed),
        waited: server.waited.load(Ordering::Relaxed),
        peak_mapped: server.pool.stats().peak_mapped_bytes,
    };
    if report.connections != cfg.connections as u64 {
        return Err(io::Error::other(format!(
            "served {} of {} connections",
            report.connections, cfg.connections
        ))
        .into());
    }
    assert!(report.peak_mapped <= cfg.budget);
    Ok(report)
}

/// One connection of the async server: a buffer from the pool (awaited when the budget is used
/// up), then echo until the client shuts its side.
async fn serve_async(
    pool: &SegmentPool,
    mut stream: tokio::net::TcpStream,
    waited: &AtomicU64,
    echoed: &AtomicU64,
) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = match pool.allocate(BUFFER) {
        Ok(buf) => buf,
        Err(e) if matches!(e.kind(), segpool::ErrorKind::BudgetExceeded { .. }) => {
            waited.fetch_add(1, Ordering::Relaxed);
            pool.allocate_async(BUFFER).await?
        }
        Err(e) => return Err(e.into()),
    };
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
        echoed.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One client connection of the async variant (as [`client`]).
async fn client_async(addr: SocketAddr, c: usize, total: usize) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let (mut out, mut back) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut sent = 0;
    while sent < total {
        let n = CHUNK.min(total - sent);
        for (k, b) in out[..n].iter_mut().enumerate() {
            *b = byte(c, sent + k);
        }
        s.write_all(&out[..n]).await?;
        s.read_exact(&mut back[..n]).await?;
        if back[..n] != out[..n] {
            return Err(format!("connection {c}: wrong echo at byte {sent}").into());
        }
        sent += n;
    }
    s.shutdown().await?;
    if s.read(&mut back).await? != 0 {
        return Err(format!("connection {c}: extra bytes after the echo").into());
    }
    Ok(())
}

/// The async variant: server and clients as tasks of one runtime on one thread.
pub fn run_async(cfg: &Config) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let pool = SegmentPool::builder()
        .size_classes(&[BUFFER])
        .budget(cfg.budget)
        .build()?;
    let (waited, echoed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = {
            let (pool, waited, echoed) = (pool.clone(), Arc::clone(&waited), Arc::clone(&echoed));
            let connections = cfg.connections;
            tokio::task::spawn(async move {
                let mut handlers = Vec::with_capacity(connections);
                for _ in 0..connections {
                    let (stream, _) = listener.accept().await?;
                    let (pool, waited, echoed) =
                        (pool.clone(), Arc::clone(&waited), Arc::clone(&echoed));
                    handlers.push(tokio::task::spawn(async move {
                        serve_async(&pool, stream, &waited, &echoed).await
                    }));
                }
                let mut served = 0u64;
                for h in handlers {
                    h.await.map_err(|e| format!("server task: {e}"))??;
                    served += 1;
                }
                Result::Ok(served)
            })
        };
        let next = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..cfg.concurrency)
            .map(|_| {
                let (next, total, bytes) =
                    (Arc::clone(&next), cfg.connections, cfg.bytes_per_connection);
                tokio::task::spawn(async move {
                    loop {
                        let c = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if c >= total {
                            return Result::Ok(());
                        }
                        client_async(addr, c, bytes).await?;
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.map_err(|e| format!("client task: {e}"))??;
        }
        server.await.map_err(|e| format!("server task: {e}"))?
    })?;
    let report = Report {
        connections: served,
        bytes_echoed: echoed.load(Ordering::Relaxed),
        waited: waited.load(Ordering::Relaxed),
        peak_mapped: pool.stats().peak_mapped_bytes,
    };
    assert!(report.peak_mapped <= cfg.budget);
    Ok(report)
}

fn print(what: &str, cfg: &Config, r: &Report, t: std::time::Instant) {
    println!(
        "{what}: {} connections ({} at once) echoed {} MiB, every byte checked, in {:.2} s; {} \
         waited for a buffer instead of failing; peak memory {} KiB mapped of a {} KiB budget",
        r.connections,
        cfg.concurrency,
        r.bytes_echoed >> 20,
        t.elapsed().as_secs_f64(),
        r.waited,
        r.peak_mapped >> 10,
        cfg.budget >> 10
    );
}

fn main() -> Result<()> {
    let cfg = Config::default();
    let t = std::time::Instant::now();
    let r = run(&cfg)?;
    print("threads", &cfg, &r, t);
    let cfg = Config {
        concurrency: 128,
        connections: 512,
        ..Config::default()
    };
    let t = std::time::Instant::now();
    let r = run_async(&cfg)?;
    print("async, one thread", &cfg, &r, t);
    Ok(())
}
