//! One QEMU guest: direct kernel boot, serial console to a file, a NIC on a scenario's switch (or
//! user-mode networking with `restrict=on`), bounded waits, power-down through the monitor socket and, failing that, a kill by
//! PID. A `Vm` that is dropped while QEMU still runs kills it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// KVM when `/dev/kvm` opens read-write and a guest kernel actually runs under it (some
    /// sandboxes expose a `/dev/kvm` that fails at the first instruction), else TCG.
    /// `KILN_E2E_ACCEL=kvm|tcg` overrides.
    pub fn detect(kernel: &Path, initrd: &Path) -> Accel {
        match std::env::var("KILN_E2E_ACCEL").as_deref() {
            Ok("tcg") => return Accel::Tcg,
            Ok("kvm") => return Accel::Kvm,
            _ => {}
        }
        let opens = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if !opens {
            return Accel::Tcg;
        }
        let dir = std::env::temp_dir().join(format!("kiln-e2e-kvm-probe-{}", std::process::id()));
        let probe = Vm::start(&VmConfig {
            name: "kvm-probe".into(),
            disk: None,
            seed: None,
            mac: "52:54:00:e2:e0:00".into(),
            kernel: kernel.to_owned(),
            initrd: initrd.to_owned(),
            accel: Accel::Kvm,
            netdev: None,
            dir: dir.clone(),
        });
        let works = match probe {
            Ok(mut vm) => {
                let seen = vm.wait_console(&["Freeing unused kernel"], Duration::from_secs(30));
                vm.kill();
                matches!(seen, Ok(Some(_)))
            }
            Err(_) => false,
        };
        let _ = std::fs::remove_dir_all(&dir);
        if works { Accel::Kvm } else { Accel::Tcg }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// Multiplier for every wait: emulation is an order of magnitude slower.
    pub fn slowness(self) -> u32 {
        match self {
            Accel::Kvm => 1,
            Accel::Tcg => 5,
        }
    }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub name: String,
    pub disk: Option<PathBuf>,
    pub seed: Option<PathBuf>,
    pub mac: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub accel: Accel,
    /// The NIC's `-netdev` (a [`super::net::Switch`] port); `None` is user-mode networking with
    /// `restrict=on` (the base image's first boot and the KVM probe).
    pub netdev: Option<String>,
    /// Where `console.log`, `qemu.log`, `qemu.pid` and `monitor.sock` go.
    pub dir: PathBuf,
}

/// The kernel command line of every e2e guest: the root found by label like Ubuntu's cloud images,
/// mounted read-only first so systemd-fsck checks it, serial console, reboot = exit on panic.
/// `mitigations=off`: these throwaway guests run nothing untrusted, and under TCG the page-table
/// isolation and speculation barriers cost every system call dearly.
pub const CMDLINE: &str = "root=LABEL=cloudimg-rootfs ro console=ttyS0,115200 panic=-1 \
                           systemd.show_status=1 mitigations=off";

#[derive(Debug)]
pub struct Vm {
    pub name: String,
    child: Option<Child>,
    pub console: PathBuf,
    monitor: PathBuf,
}

impl Vm {
    pub fn start(cfg: &VmConfig) -> Result<Vm> {
        std::fs::create_dir_all(&cfg.dir)?;
        let console = cfg.dir.join("console.log");
        let monitor = cfg.dir.join("monitor.sock");
        let _ = std::fs::remove_file(&monitor);
        let _ = std::fs::remove_file(&console);
        let log = File::create(cfg.dir.join("qemu.log"))?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-name", &cfg.name])
            .args(["-machine", &format!("pc,accel={}", cfg.accel.name())])
            .args([
                "-cpu",
                // Under TCG the plain x86-64 model: with `max` glibc and the kernel pick
                // AVX and other paths that cost more to emulate (a 3-node boot measured
                // 113-128 s with qemu64, 132-155 s with max).
                if cfg.accel == Accel::Kvm {
                    "host"
                } else {
                    "qemu64"
                },
            ])
            .args(["-m", "1024", "-smp", "1"])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(&cfg.kernel)
            .arg("-initrd")
            .arg(&cfg.initrd)
            .args(["-append", CMDLINE]);
        if let Some(disk) = &cfg.disk {
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format=qcow2,discard=unmap",
                disk.display()
            ));
        }
        if let Some(seed) = &cfg.seed {
            cmd.arg("-drive").arg(format!(
                "file={},if=ide,media=cdrom,readonly=on,format=raw",
                seed.display()
            ));
        }
        let user = "user,id=net0,restrict=on,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3";
        cmd.args(["-netdev", cfg.netdev.as_deref().unwrap_or(user)])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=net0,mac={}", cfg.mac),
            ])
            .args(["-device", "virtio-rng-pci"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .arg("-pidfile")
            .arg(cfg.dir.join("qemu.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (is qemu-system-x86 installed? see .ci/run)")?;
        Ok(Vm {
            name: cfg.name.clone(),
            child: Some(child),
            console,
            monitor,
        })
    }

    /// The console so far (lossy UTF-8).
    pub fn console_text(&self) -> String {
        std::fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Wait until a console line contains one of `needles` (returns its index and the line), QEMU
    /// exits (error), or `timeout` passes (`None`).
    pub fn wait_console(
        &mut self,
        needles: &[&str],
        timeout: Duration,
    ) -> Result<Option<(usize, String)>> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console_text();
            for line in text.lines() {
                if let Some(i) = needles.iter().position(|n| line.contains(n)) {
                    return Ok(Some((i, line.to_owned())));
                }
            }
            if let Some(status) = self.try_wait()? {
                bail!(
                    "{}: QEMU exited ({status}) before the console showed any of {needles:?}",
                    self.name
                );
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("{}: QEMU is not running", self.name),
        }
    }

    /// Press the ACPI power button (what `virsh shutdown` does). The monitor is read until it has
    /// answered the command: QEMU drops a command whose client hangs up at once.
    pub fn powerdown(&mut self) -> Result<()> {
        let mut s = UnixStream::connect(&self.monitor)
            .with_context(|| format!("{}: connecting to the QEMU monitor", self.name))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.write_all(b"system_powerdown\n")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        // The greeting ends in a prompt; the command's echo is followed by a second one.
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            let text = String::from_utf8_lossy(&seen);
            if text.contains("system_powerdown") && text.matches("(qemu)").count() >= 2 {
                return Ok(());
            }
        }
        bail!(
            "{}: the QEMU monitor did not answer system_powerdown: {:?}",
            self.name,
            String::from_utf8_lossy(&seen)
        )
    }

    /// Wait up to `timeout` for QEMU to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                self.child = None;
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Power the guest down and wait; kill it by PID when it does not stop in time. Returns whether
    /// it stopped by itself.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<bool> {
        if self.child.is_none() {
            return Ok(true);
        }
        if self.try_wait()?.is_some() {
            self.child = None;
            return Ok(true);
        }
        self.powerdown()?;
        if self.wait_exit(timeout)?.is_some() {
            return Ok(true);
        }
        println!(
            "  {}: no power-off within {} s; killing QEMU (pid {})",
            self.name,
            timeout.as_secs(),
            self.child.as_ref().map_or(0, Child::id)
        );
        self.kill();
        Ok(false)
    }

    /// SIGKILL by PID, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a console, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
