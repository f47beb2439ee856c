//! A real `redis-server` (Debian's package; `.ci/run` installs it) on a
//! free loopback port, with its own temporary directory and no
//! persistence, stopped when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        // The port was free when picked; another process may take it first.
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
            let mut server = RedisServer { child: None, addr, dir: tempfile::tempdir().unwrap() };
            server.child = Some(spawn(addr, server.dir.path()));
            if server.wait_ready() {
                return server;
            }
        }
        panic!("redis-server did not start on three free ports");
    }

    /// The `limits.store` URL for this server.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Stop the server (SIGKILL), keeping the port for [`Self::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.child = Some(spawn(self.addr, self.dir.path()));
        assert!(self.wait_ready(), "redis-server did not come back on {}", self.addr);
    }

    /// Run one command (inline form) and return the raw reply.
    pub fn command(&self, line: &str) -> String {
        let mut tcp = TcpStream::connect(self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = tcp.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                eprintln!("redis-server exited: {status}");
                self.child = None;
                return false;
            }
            if let Ok(mut tcp) = TcpStream::connect(self.addr) {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 16];
                if tcp.write_all(b"PING\r\n").is_ok()
                    && tcp.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(addr: SocketAddr, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string(), "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (apt-get install redis-server; .ci/run installs it)")
}
