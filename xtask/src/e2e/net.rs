//! One private Ethernet segment for a scenario's VMs, as libvirt's default network gives them: a
//! learning switch on unix datagram sockets. Each VM's NIC is QEMU's `-netdev dgram` with its own
//! socket (`local`) and the switch's (`remote`); the switch sends a frame to the port that last
//! sent from its destination MAC, and floods broadcast, multicast and unknown destinations to every
//! other port. Nothing here touches a host network interface: frames only travel between these
//! sockets, so the guests' addresses exist nowhere but on this segment.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// A running switch; stopped (and its socket removed) on drop.
#[derive(Debug)]
pub struct Switch {
    path: PathBuf,
    ports: Vec<PathBuf>,
    stop: Arc<AtomicBool>,
    frames: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Longest frame QEMU sends (jumbo frames off): 1514 bytes plus headroom.
const MAX_FRAME: usize = 65536;

impl Switch {
    /// Bind the switch at `dir/switch.sock` for `ports` (the NIC sockets QEMU will bind, named
    /// `dir/<name>.sock`), and start forwarding.
    pub fn start(dir: &Path, names: &[&str]) -> Result<Switch> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("switch.sock");
        let _ = std::fs::remove_file(&path);
        let ports: Vec<PathBuf> = names
            .iter()
            .map(|n| dir.join(format!("{n}.sock")))
            .collect();
        for p in &ports {
            let _ = std::fs::remove_file(p);
        }
        let sock = UnixDatagram::bind(&path)
            .with_context(|| format!("binding the switch socket {}", path.display()))?;
        // Non-blocking both ways: a guest whose NIC is down stops reading its socket, and a
        // blocking send to it would stall the whole segment; its frames are dropped instead, as
        // a real switch drops frames for a port whose queue is full.
        sock.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, frames, ports) = (stop.clone(), frames.clone(), ports.clone());
            std::thread::spawn(move || forward(&sock, &ports, &stop, &frames))
        };
        Ok(Switch {
            path,
            ports,
            stop,
            frames,
            thread: Some(thread),
        })
    }

    /// QEMU's `-netdev` value for the NIC of port `name`.
    pub fn netdev(&self, name: &str) -> Option<String> {
        let port = self
            .ports
            .iter()
            .find(|p| p.file_stem().is_some_and(|s| s == name))?;
        Some(format!(
            "dgram,id=net0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
            port.display(),
            self.path.display()
        ))
    }

    /// Frames forwarded so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
        for p in &self.ports {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn forward(sock: &UnixDatagram, ports: &[PathBuf], stop: &AtomicBool, frames: &AtomicU64) {
    let mut buf = vec![0u8; MAX_FRAME];
    // Source MAC → the port it was last seen on.
    let mut table: HashMap<[u8; 6], PathBuf> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => {
                // Nothing queued: look at `stop` again shortly.
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        };
        let Some(from) = from.as_pathname().map(Path::to_path_buf) else {
            continue;
        };
        let frame = &buf[..n];
        if frame.len() < 14 || !ports.contains(&from) {
            continue;
        }
        let dst: [u8; 6] = frame[0..6].try_into().unwrap_or_default();
        let src: [u8; 6] = frame[6..12].try_into().unwrap_or_default();
        if src[0] & 1 == 0 {
            table.insert(src, from.clone());
        }
        frames.fetch_add(1, Ordering::Relaxed);
        match table.get(&dst).filter(|_| dst[0] & 1 == 0) {
            Some(port) if *port != from => {
                let _ = sock.send_to(frame, port);
            }
            Some(_) => {}
            None => {
                // A port whose VM has not started (or has stopped) refuses the frame: a cable
                // to a switched-off machine.
                for p in ports.iter().filter(|p| **p != from) {
                    let _ = sock.send_to(frame, p);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], body: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00, body]);
        f
    }

    #[test]
    fn floods_then_switches_and_a_port_that_never_reads_stalls_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let switch = Switch::start(tmp.path(), &["a", "b", "dead"]).unwrap();
        let bind = |n: &str| {
            let s = UnixDatagram::bind(tmp.path().join(format!("{n}.sock"))).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        };
        let (a, b, _dead) = (bind("a"), bind("b"), bind("dead"));
        let hub = tmp.path().join("switch.sock");
        let (ma, mb) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
        let mut buf = [0u8; 64];
        // Broadcast from a reaches b; b's answer to a's MAC reaches a.
        a.send_to(&frame([0xff; 6], ma, 1), &hub).unwrap();
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], frame([0xff; 6], ma, 1).as_slice());
        b.send_to(&frame(ma, mb, 2), &hub).unwrap();
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], frame(ma, mb, 2).as_slice());
        // Thousands of broadcasts fill the queue of the port that never reads; a and b still talk.
        for i in 0..5000u32 {
            a.send_to(&frame([0xff; 6], ma, (i % 251) as u8), &hub)
                .unwrap();
            let _ = b.recv(&mut buf).unwrap();
        }
        b.send_to(&frame(ma, mb, 3), &hub).unwrap();
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], frame(ma, mb, 3).as_slice());
        assert!(switch.frames() >= 5003);
        // A frame from a socket that is not a port is not forwarded.
        let stranger = UnixDatagram::bind(tmp.path().join("x.sock")).unwrap();
        stranger
            .send_to(&frame([0xff; 6], [2, 0, 0, 0, 0, 9], 4), &hub)
            .unwrap();
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(a.recv(&mut buf).is_err());
    }
}
