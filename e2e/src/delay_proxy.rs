//! A TCP proxy that delays what it forwards: the latency half of a network emulator, in user space
//! because this project's CI kernels have no `netem` qdisc (`tc … netem delay` is missing), while
//! `tc tbf` does the bandwidth half in the kernel (see [`crate::netns`]).
//!
//! Each proxy listens on one address and forwards every connection to one upstream address. Every
//! chunk read from either side is held for the connection's one-way delay before it is written to
//! the other side, so a request/answer exchange (an RTT probe's echo, a heartbeat) takes two
//! delays longer than without the proxy. The chunks of a direction keep their spacing: the delay
//! is a delay line, not stop-and-wait, so a bulk transfer (a bandwidth probe) keeps its throughput
//! and pays the delay once. Only data is delayed; the TCP handshakes are not (the proxy accepts at
//! once and connects upstream at once), which the agent's measurements do not count anyway.
//!
//! The delay is chosen per connection from the client's address, so one proxy in front of a host
//! gives each other host its own distance to it: the path from A to B through B's proxy takes the
//! delay of the pair (A, B). Nothing is buffered beyond what is in flight: a chunk is written as
//! soon as its delay has passed.
//!
//! Every connection runs on four threads (a reader and a writer per direction). Dropping the proxy
//! stops accepting and shuts down every open connection, so nothing outlives a test.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// How long a connection to the upstream may take before the client's connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest chunk read at once (a bandwidth probe moves megabytes).
const CHUNK: usize = 64 * 1024;

/// How often the acceptor looks for a stop while no client connects.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// The one-way delay of a connection, given the client's IP address.
pub type DelayFor = dyn Fn(IpAddr) -> Duration + Send + Sync;

/// One listening proxy; see the module docs.
pub struct DelayProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

/// What the acceptor and the connections share with the proxy's owner.
struct Shared {
    stopping: AtomicBool,
    /// Both sockets of every open connection, by connection number, to shut them down on drop.
    open: Mutex<HashMap<u64, [TcpStream; 2]>>,
    next_id: AtomicU64,
}

impl DelayProxy {
    /// Listens on `listen` (port 0: any free port) and forwards each connection to `upstream`,
    /// delaying each direction by `delay_for(client IP)`.
    pub fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        delay_for: Arc<DelayFor>,
    ) -> io::Result<DelayProxy> {
        let listener = TcpListener::bind(listen)?;
        // Polled, so that a stop is seen even when the listening address is gone (its namespace
        // or bridge deleted first): a blocking `accept` could not be woken then.
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("delay-proxy-{addr}"))
                .spawn(move || accept_loop(listener, upstream, delay_for, shared))?
        };
        Ok(DelayProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Ends every pump: reads return, writes fail.
        for [client, server] in lock(&self.shared.open).drain().map(|(_, s)| s) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    delay_for: Arc<DelayFor>,
    shared: Arc<Shared>,
) {
    while !shared.stopping.load(Ordering::SeqCst) {
        let (client, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            // Nobody waiting (or a transient failure, e.g. out of descriptors): look again soon.
            Err(_) => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        if client.set_nonblocking(false).is_err() {
            continue;
        }
        let delay = delay_for(peer.ip());
        let shared = Arc::clone(&shared);
        // Connecting upstream may take up to CONNECT_TIMEOUT: not on the acceptor's thread.
        let _ = thread::Builder::new()
            .name("delay-proxy-conn".into())
            .spawn(move || connect(client, upstream, delay, shared));
    }
}

/// Connects `client` to `upstream` and starts the four pumps; closes `client` if the upstream
/// cannot be reached (as a host that is gone would).
fn connect(client: TcpStream, upstream: SocketAddr, delay: Duration, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    // Small frames (an RTT probe's 16 bytes) go out when their delay ends, not after Nagle's.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut open = lock(&shared.open);
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        open.insert(id, [c2, s2]);
    }
    // Removes the connection from `open` when the last of its pumps ends.
    let registration = Arc::new(Registration { id, shared });
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        };
        let (tx, rx) = mpsc::channel();
        let reader_registration = Arc::clone(&registration);
        let writer_registration = Arc::clone(&registration);
        let spawned = thread::Builder::new()
            .name("delay-proxy-read".into())
            .spawn(move || {
                read_side(from, delay, tx);
                drop(reader_registration);
            })
            .and_then(|_| {
                thread::Builder::new()
                    .name("delay-proxy-write".into())
                    .spawn(move || {
                        write_side(to, rx);
                        drop(writer_registration);
                    })
            });
        if spawned.is_err() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Deregisters a connection once every pump holding it is done.
struct Registration {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.shared.open).remove(&self.id);
    }
}

/// Reads chunks from `from` and queues each with the moment it may be written; `None` marks the
/// end (EOF or an error).
fn read_side(
    mut from: TcpStream,
    delay: Duration,
    to_writer: mpsc::Sender<Option<(Instant, Vec<u8>)>>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to_writer.send(None);
                return;
            }
            Ok(n) => {
                let due = Instant::now() + delay;
                if to_writer.send(Some((due, buf[..n].to_vec()))).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

/// Writes each queued chunk to `to` once its moment has come; at the end, half-closes `to`, as
/// the sender did. A failed write closes both directions (the reader then ends too).
fn write_side(mut to: TcpStream, from_reader: mpsc::Receiver<Option<(Instant, Vec<u8>)>>) {
    while let Ok(Some((due, chunk))) = from_reader.recv() {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback: answers each chunk with the same bytes.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn an_echo_through_the_proxy_takes_two_delays_and_comes_back_intact() {
        let upstream = echo_server();
        let delay = Duration::from_millis(40);
        let proxy = DelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            upstream,
            Arc::new(move |_| delay),
        )
        .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut rtts = Vec::new();
        for round in 0..3u8 {
            let frame = [round; 16];
            let sent = Instant::now();
            stream.write_all(&frame).unwrap();
            let mut back = [0u8; 16];
            stream.read_exact(&mut back).unwrap();
            rtts.push(sent.elapsed());
            assert_eq!(back, frame, "the echo came back changed");
        }
        eprintln!("echo RTTs through a 40 ms proxy: {rtts:?}");
        // A delay line cannot deliver early: every echo took at least both delays.
        assert!(rtts.iter().all(|rtt| *rtt >= 2 * delay), "{rtts:?}");
    }

    #[test]
    fn the_delay_is_chosen_by_the_client_address_and_a_dropped_proxy_closes_its_connections() {
        let upstream = echo_server();
        let proxy = DelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            upstream,
            Arc::new(|ip: IpAddr| {
                if ip.is_loopback() {
                    Duration::from_millis(25)
                } else {
                    Duration::ZERO
                }
            }),
        )
        .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).unwrap();
        let sent = Instant::now();
        stream.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).unwrap();
        assert!(sent.elapsed() >= Duration::from_millis(50));
        assert_eq!(&back, b"ping");
        drop(proxy);
        // The proxy shut the connection down: the next read ends instead of hanging.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let ended = matches!(stream.read(&mut back), Ok(0) | Err(_));
        assert!(ended, "the connection outlived its proxy");
    }
}
