//! Generated test inputs (feature `fixtures`): an Ubuntu-24.04-like base cloud image that looks
//! booted once, and stand-in k3s release assets. Made without root with host tools — `mkfs.ext4
//! -d`, `mkfs.vfat`, `sgdisk`, `tar`, `qemu-img convert -c` — and deterministic: the same spec
//! gives the same bytes (fixed UUIDs, hash seed, GUIDs, volume id, `E2FSPROGS_FAKE_TIME`, and every
//! inode's times reset with kiln-ext4 after `mkfs.ext4 -d`, which copies the host's ctimes).
//!
//! Layout (like Ubuntu's cloud images): GPT 14 = BIOS boot (4 MiB), 15 = ESP vfat `UEFI`,
//! 16 = ext4 `BOOT`, 1 = ext4 `cloudimg-rootfs` (the rest); zlib-compressed qcow2.

use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// What base image to make.
#[derive(Debug, Clone)]
pub struct BaseSpec {
    /// Virtual disk size in bytes.
    pub virtual_size: u64,
    /// ESP size in MiB.
    pub esp_mib: u64,
    /// /boot size in MiB.
    pub boot_mib: u64,
    /// Extra files in /etc/kiln-fixture-many (a large htree directory).
    pub many_files: usize,
    /// Size of a filler file in /usr/lib (bytes), so the root fs carries real data.
    pub filler: usize,
    /// All times in the image.
    pub time: i64,
    /// Leave the root filesystem's journal needing recovery (as after a crash), which kiln must
    /// refuse to edit.
    pub dirty_journal: bool,
}

impl BaseSpec {
    /// The full-size fixture: 3.5 GiB virtual, 106 MiB ESP, 1 GiB /boot.
    pub fn ubuntu() -> Self {
        Self {
            virtual_size: 3584 << 20,
            esp_mib: 106,
            boot_mib: 1024,
            many_files: 3000,
            filler: 64 << 20,
            time: 1_735_689_600,
            dirty_journal: false,
        }
    }

    /// A small one for tests (same layout and content, 300 MiB virtual).
    pub fn small() -> Self {
        Self {
            virtual_size: 300 << 20,
            esp_mib: 8,
            boot_mib: 16,
            many_files: 1500,
            filler: 1 << 20,
            time: 1_735_689_600,
            dirty_journal: false,
        }
    }
}

/// A generated base image and the booted-once identity it carries.
#[derive(Debug, Clone)]
pub struct BaseFixture {
    pub path: PathBuf,
    pub sha256: String,
    pub machine_id: String,
    pub instance_id: String,
    /// Paths the default scrub catalog must remove or reset.
    pub dirty_paths: Vec<&'static str>,
}

pub const MACHINE_ID: &str = "3f1c9a7e5b2d4c6e8a0b1c2d3e4f5a6b";
pub const INSTANCE_ID: &str = "i-0a1b2c3d4e5f60718";

/// Files a booted-once Ubuntu cloud image carries that kiln's default scrub ops must handle.
pub const DIRTY: &[&str] = &[
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
    "/var/lib/cloud/instance",
    "/var/lib/cloud/instances",
    "/var/lib/cloud/data",
    "/var/lib/cloud/seed",
    "/var/log/cloud-init.log",
    "/var/log/cloud-init.log.1",
    "/var/log/cloud-init-output.log",
    "/etc/netplan/50-cloud-init.yaml",
    "/etc/ssh/sshd_config.d/50-cloud-init.conf",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_rsa_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/var/lib/systemd/random-seed",
    "/var/log/syslog",
    "/var/log/syslog.1",
    "/var/log/journal/3f1c9a7e5b2d4c6e8a0b1c2d3e4f5a6b",
    "/tmp/cloud-init-tmp.txt",
    "/var/tmp/systemd-private-x",
    "/root/.bash_history",
    "/home/ubuntu/.bash_history",
    "/var/cache/apt/pkgcache.bin",
    "/var/cache/apt/archives/curl_8.5.0-2ubuntu10_amd64.deb",
    "/var/lib/dhcp/dhclient.ens3.leases",
    "/var/lib/systemd/netif/leases/2",
    "/etc/hostname",
    "/etc/NetworkManager/system-connections/cloud-init-ens3.nmconnection",
    "/etc/NetworkManager/conf.d/99-cloud-init.conf",
    "/etc/systemd/network/10-cloud-init-ens3.network",
    "/etc/network/interfaces.d/50-cloud-init.cfg",
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/var/lib/systemd/credential.secret",
    "/var/lib/NetworkManager/internal-6c2e5a1f-ens3.lease",
    "/var/cache/apt/archives/partial/vim_9.1_amd64.deb.FAILED",
    "/var/log/apt/history.log",
];

/// Files next to the dirty ones that the default scrub catalog must leave alone.
pub const KEEP: &[&str] = &[
    "/etc/netplan/01-site.yaml",
    "/etc/systemd/network/20-wired.network",
    "/etc/udev/rules.d/99-site.rules",
    "/etc/NetworkManager/system-connections/site-vpn.nmconnection",
    "/etc/ssh/sshd_config",
    "/home/ubuntu/.profile",
    "/var/lib/cloud",
    "/var/log/journal",
    "/var/cache/apt/archives/partial",
    "/tmp",
];

fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::other(format!("cannot run {cmd:?} (is it installed?): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn put(root: &Path, path: &str, content: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(path.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&p, content)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for a filler.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The root tree of a booted-once Ubuntu 24.04 cloud instance (trimmed to what kiln touches).
fn root_tree(root: &Path, spec: &BaseSpec) -> io::Result<()> {
    let mid = format!("{MACHINE_ID}\n");
    put(root, "/etc/machine-id", mid.as_bytes(), 0o444)?;
    put(root, "/var/lib/dbus/machine-id", mid.as_bytes(), 0o444)?;
    put(root, "/etc/hostname", b"ubuntu-build-vm\n", 0o644)?;
    put(root, "/etc/hosts", b"127.0.0.1 localhost\n", 0o644)?;
    put(
        root,
        "/etc/os-release",
        b"PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n",
        0o644,
    )?;
    put(
        root,
        "/etc/netplan/50-cloud-init.yaml",
        b"network:\n  version: 2\n  ethernets:\n    ens3:\n      match:\n        macaddress: \"52:54:00:12:34:56\"\n      dhcp4: true\n      set-name: \"ens3\"\n",
        0o600,
    )?;
    put(
        root,
        "/etc/ssh/sshd_config",
        b"Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\n",
        0o644,
    )?;
    put(
        root,
        "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        b"PasswordAuthentication no\n",
        0o600,
    )?;
    for (i, t) in ["ed25519", "rsa", "ecdsa"].iter().enumerate() {
        let key = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
            hex(&noise(96, 7 + i as u64))
        );
        put(
            root,
            &format!("/etc/ssh/ssh_host_{t}_key"),
            key.as_bytes(),
            0o600,
        )?;
        let pubk = format!(
            "ssh-{t} AAAA{} root@ubuntu-build-vm\n",
            hex(&noise(32, 17 + i as u64))
        );
        put(
            root,
            &format!("/etc/ssh/ssh_host_{t}_key.pub"),
            pubk.as_bytes(),
            0o644,
        )?;
    }
    let inst = format!("/var/lib/cloud/instances/{INSTANCE_ID}");
    put(
        root,
        &format!("{inst}/boot-finished"),
        b"1735689600.0 - v. 24.4\n",
        0o644,
    )?;
    put(
        root,
        &format!("{inst}/datasource"),
        b"DataSourceNoCloud: DataSourceNoCloud [seed=/dev/sr0]\n",
        0o644,
    )?;
    put(
        root,
        &format!("{inst}/user-data.txt"),
        b"#cloud-config\npassword: hunter2\nchpasswd: { expire: false }\n",
        0o600,
    )?;
    put(root, &format!("{inst}/obj.pkl"), &noise(2048, 3), 0o600)?;
    put(
        root,
        &format!("{inst}/sem/config_ssh"),
        b"1735689600\n",
        0o644,
    )?;
    std::os::unix::fs::symlink(&inst, root.join("var/lib/cloud/instance"))?;
    put(
        root,
        "/var/lib/cloud/data/instance-id",
        format!("{INSTANCE_ID}\n").as_bytes(),
        0o644,
    )?;
    put(
        root,
        "/var/lib/cloud/data/status.json",
        b"{\"v1\": {\"datasource\": \"DataSourceNoCloud\"}}\n",
        0o644,
    )?;
    put(
        root,
        "/var/lib/cloud/seed/nocloud/meta-data",
        b"instance-id: build\n",
        0o600,
    )?;
    std::fs::create_dir_all(root.join("var/lib/cloud/scripts/per-boot"))?;
    put(
        root,
        "/var/log/cloud-init.log",
        b"2025-01-01 00:00:00,000 - util.py[DEBUG]: Cloud-init v. 24.4 running 'init-local'\n",
        0o640,
    )?;
    put(root, "/var/log/cloud-init.log.1", b"old run\n", 0o640)?;
    put(
        root,
        "/var/log/cloud-init-output.log",
        b"Cloud-init v. 24.4 finished\n",
        0o640,
    )?;
    put(
        root,
        "/var/log/syslog",
        b"Jan  1 00:00:00 ubuntu-build-vm systemd[1]: Started.\n",
        0o640,
    )?;
    put(root, "/var/log/syslog.1", b"older\n", 0o640)?;
    put(root, "/var/log/wtmp", b"", 0o664)?;
    put(
        root,
        &format!("/var/log/journal/{MACHINE_ID}/system.journal"),
        &noise(4096, 5),
        0o640,
    )?;
    put(root, "/var/lib/systemd/random-seed", &noise(512, 11), 0o600)?;
    put(
        root,
        "/var/lib/systemd/credential.secret",
        &noise(32, 37),
        0o400,
    )?;
    put(
        root,
        "/etc/NetworkManager/system-connections/cloud-init-ens3.nmconnection",
        b"[connection]\nid=cloud-init ens3\ntype=ethernet\n",
        0o600,
    )?;
    put(
        root,
        "/etc/NetworkManager/system-connections/site-vpn.nmconnection",
        b"[connection]\nid=site-vpn\ntype=vpn\n",
        0o600,
    )?;
    put(
        root,
        "/etc/NetworkManager/conf.d/99-cloud-init.conf",
        b"[main]\ndns=none\n",
        0o644,
    )?;
    put(
        root,
        "/etc/systemd/network/10-cloud-init-ens3.network",
        b"[Match]\nName=ens3\n[Network]\nDHCP=ipv4\n",
        0o644,
    )?;
    put(
        root,
        "/etc/systemd/network/20-wired.network",
        b"[Match]\nName=en*\n",
        0o644,
    )?;
    put(
        root,
        "/etc/network/interfaces.d/50-cloud-init.cfg",
        b"auto ens3\niface ens3 inet dhcp\n",
        0o644,
    )?;
    put(
        root,
        "/etc/netplan/01-site.yaml",
        b"network:\n  version: 2\n",
        0o600,
    )?;
    put(
        root,
        "/etc/udev/rules.d/70-persistent-net.rules",
        b"SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:12:34:56\", NAME=\"ens3\"\n",
        0o644,
    )?;
    put(
        root,
        "/etc/udev/rules.d/99-site.rules",
        b"# site rules\n",
        0o644,
    )?;
    put(
        root,
        "/var/lib/NetworkManager/internal-6c2e5a1f-ens3.lease",
        b"ADDRESS=10.0.2.15\n",
        0o644,
    )?;
    put(
        root,
        "/var/cache/apt/archives/partial/vim_9.1_amd64.deb.FAILED",
        &noise(512, 41),
        0o600,
    )?;
    put(
        root,
        "/var/log/apt/history.log",
        b"Start-Date: 2025-01-01  00:00:00\n",
        0o644,
    )?;
    put(root, "/tmp/cloud-init-tmp.txt", b"scratch\n", 0o644)?;
    put(root, "/var/tmp/systemd-private-x/tmp/a", b"x\n", 0o600)?;
    put(
        root,
        "/root/.bash_history",
        b"apt-get update\nshutdown -h now\n",
        0o600,
    )?;
    put(root, "/home/ubuntu/.bash_history", b"sudo -i\n", 0o600)?;
    put(root, "/home/ubuntu/.profile", b"# ~/.profile\n", 0o644)?;
    put(root, "/var/cache/apt/pkgcache.bin", &noise(8192, 13), 0o644)?;
    put(
        root,
        "/var/cache/apt/archives/curl_8.5.0-2ubuntu10_amd64.deb",
        &noise(4096, 19),
        0o644,
    )?;
    std::fs::create_dir_all(root.join("var/cache/apt/archives/partial"))?;
    put(
        root,
        "/var/lib/dhcp/dhclient.ens3.leases",
        b"lease {\n  interface \"ens3\";\n}\n",
        0o644,
    )?;
    put(
        root,
        "/var/lib/systemd/netif/leases/2",
        b"ADDRESS=10.0.2.15\n",
        0o644,
    )?;
    put(root, "/usr/lib/systemd/system/ssh.service", b"[Unit]\nDescription=OpenBSD Secure Shell server\n[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\n", 0o644)?;
    put(root, "/usr/lib/systemd/system/iscsid.service", b"[Unit]\nDescription=iSCSI initiator daemon\n[Service]\nExecStart=/usr/sbin/iscsid\n[Install]\nWantedBy=multi-user.target\n", 0o644)?;
    put(
        root,
        "/usr/lib/kiln-fixture/filler.bin",
        &noise(spec.filler, 23),
        0o644,
    )?;
    std::fs::create_dir_all(root.join("etc/cloud/cloud.cfg.d"))?;
    put(
        root,
        "/etc/cloud/cloud.cfg",
        b"users:\n  - default\n",
        0o644,
    )?;
    std::fs::create_dir_all(root.join("usr/local/bin"))?;
    std::fs::create_dir_all(root.join("etc/systemd/system/multi-user.target.wants"))?;
    for i in 0..spec.many_files {
        put(
            root,
            &format!("/etc/kiln-fixture-many/conf-{i:05}.conf"),
            format!("setting_{i} = {i}\n").as_bytes(),
            0o644,
        )?;
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    crate::hex(b)
}

/// Reset every inode's atime/mtime/ctime to `time` (mkfs.ext4 -d copies the host's ctimes).
fn reset_times(image: &Path, time: i64) -> io::Result<()> {
    let dev = kiln_blockdev::FileDev::open_read_write(image).map_err(io::Error::other)?;
    let mut fs =
        kiln_ext4::Filesystem::open(&dev, "fixture", kiln_ext4::OpenOptions::read_write(time))
            .map_err(io::Error::other)?;
    let times = kiln_ext4::Times {
        atime: Some(time),
        mtime: Some(time),
        ctime: Some(time),
    };
    let mut stack = vec!["/".to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs.read_dir(&dir).map_err(io::Error::other)? {
            let p = if dir == "/" {
                format!("/{}", e.name_lossy())
            } else {
                format!("{dir}/{}", e.name_lossy())
            };
            fs.set_times(&p, times, false).map_err(io::Error::other)?;
            if e.kind == kiln_ext4::FileKind::Dir {
                stack.push(p);
            }
        }
    }
    fs.set_times("/", times, false).map_err(io::Error::other)?;
    fs.close().map_err(io::Error::other)
}

fn mkfs_ext4(
    img: &Path,
    size: u64,
    label: &str,
    uuid: &str,
    tree: &Path,
    time: i64,
) -> io::Result<()> {
    std::fs::File::create(img)?.set_len(size)?;
    run(Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", time.to_string())
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-L", label, "-U", uuid,
        ])
        .args(["-O", "^orphan_file,^metadata_csum_seed"])
        .arg("-E")
        .arg(format!(
            "hash_seed={uuid},lazy_itable_init=1,lazy_journal_init=1"
        ))
        .arg("-d")
        .arg(tree)
        .arg(img))?;
    reset_times(img, time)
}

/// Copy `src` into `dst` at `offset`, skipping all-zero MiB chunks (keeps `dst` sparse).
pub fn copy_sparse(src: &Path, dst: &std::fs::File, offset: u64) -> io::Result<()> {
    let mut f = std::fs::File::open(src)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = f.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], offset + pos)?;
        }
        pos += n as u64;
    }
}

/// Extract the root partition (GPT entry 1) of `image` into `work/root.ext4`, locating it with
/// `sgdisk -i 1` — an oracle independent of kiln's own partition parser — for `e2fsck`/`debugfs`.
pub fn extract_root_partition(image: &Path, work: &Path) -> io::Result<PathBuf> {
    let raw = work.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(&raw))?;
    let info = run(Command::new("sgdisk").args(["-i", "1"]).arg(&raw))?;
    let field = |k: &str| -> io::Result<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                io::Error::other(format!("sgdisk -i 1 {}: no {k:?} line", raw.display()))
            })
    };
    let (first, last) = (field("First sector:")?, field("Last sector:")?);
    let part = work.join("root.ext4");
    run(Command::new("dd")
        .arg(format!("if={}", raw.display()))
        .arg(format!("of={}", part.display()))
        .args(["bs=512", "conv=sparse", "status=none"])
        .arg(format!("skip={first}"))
        .arg(format!("count={}", last - first + 1)))?;
    std::fs::remove_file(&raw)?;
    Ok(part)
}

/// sha256 of a host file, in hex.
pub fn sha256_of(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// Make the base image `dir/<name>` (work files go to a temp dir beside it, removed after).
pub fn make_base(dir: &Path, name: &str, spec: &BaseSpec) -> io::Result<BaseFixture> {
    std::fs::create_dir_all(dir)?;
    let work = dir.join(format!(".{name}.work"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let r = make_base_in(&work, dir, name, spec);
    let _ = std::fs::remove_dir_all(&work);
    r
}

fn make_base_in(work: &Path, dir: &Path, name: &str, spec: &BaseSpec) -> io::Result<BaseFixture> {
    const S: u64 = 512;
    let mib = 1 << 20;
    // Sectors, as in Ubuntu's images: 14 at 2048 (4 MiB), 15 after it, 16 after that, 1 = the rest.
    let p14 = (2048u64, 2048 + 4 * mib / S - 1);
    let p15 = (p14.1 + 1, p14.1 + spec.esp_mib * mib / S);
    let p16 = (p15.1 + 1, p15.1 + spec.boot_mib * mib / S);
    let last = spec.virtual_size / S - 34;
    // Partition 1 ends on a 1 MiB boundary (sgdisk aligns its start anyway).
    let p1 = (p16.1 + 1, ((last + 1) / 2048) * 2048 - 1);

    let tree = work.join("root");
    root_tree(&tree, spec)?;
    let boot_tree = work.join("boot");
    put(
        &boot_tree,
        "/vmlinuz-6.8.0-51-generic",
        &noise(256 << 10, 29),
        0o600,
    )?;
    put(&boot_tree, "/grub/grub.cfg", b"set timeout=0\n", 0o444)?;

    let root_img = work.join("root.ext4");
    mkfs_ext4(
        &root_img,
        (p1.1 - p1.0 + 1) * S,
        "cloudimg-rootfs",
        "7d3a1c52-8f4e-4b6a-9c1d-2e3f4a5b6c7d",
        &tree,
        spec.time,
    )?;
    if spec.dirty_journal {
        run(Command::new("debugfs")
            .args(["-w", "-R", "feature needs_recovery"])
            .arg(&root_img))?;
    }
    let boot_img = work.join("boot.ext4");
    mkfs_ext4(
        &boot_img,
        (p16.1 - p16.0 + 1) * S,
        "BOOT",
        "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9",
        &boot_tree,
        spec.time,
    )?;
    let esp_img = work.join("esp.vfat");
    std::fs::File::create(&esp_img)?.set_len((p15.1 - p15.0 + 1) * S)?;
    run(Command::new("mkfs.vfat")
        .args(["-n", "UEFI", "-i", "4a1b2c3d", "--invariant"])
        .arg(&esp_img))?;

    let raw = work.join("disk.raw");
    std::fs::File::create(&raw)?.set_len(spec.virtual_size)?;
    let part = |n: u32, (a, b): (u64, u64), code: &str, label: &str, guid: &str| {
        vec![
            format!("--new={n}:{a}:{b}"),
            format!("--typecode={n}:{code}"),
            format!("--change-name={n}:{label}"),
            format!("--partition-guid={n}:{guid}"),
        ]
    };
    let mut args = vec!["--disk-guid=0c1d2e3f-4a5b-4c6d-8e7f-90a1b2c3d4e5".to_owned()];
    args.extend(part(
        14,
        p14,
        "ef02",
        "",
        "14141414-1414-4414-8414-141414141414",
    ));
    args.extend(part(
        15,
        p15,
        "ef00",
        "",
        "15151515-1515-4515-8515-151515151515",
    ));
    args.extend(part(
        16,
        p16,
        "ea00",
        "",
        "16161616-1616-4616-8616-161616161616",
    ));
    args.extend(part(
        1,
        p1,
        "8300",
        "",
        "01010101-0101-4101-8101-010101010101",
    ));
    let args: Vec<String> = args.into_iter().filter(|a| !a.ends_with(':')).collect();
    run(Command::new("sgdisk").args(&args).arg(&raw))?;
    {
        let f = std::fs::OpenOptions::new().write(true).open(&raw)?;
        copy_sparse(&esp_img, &f, p15.0 * S)?;
        copy_sparse(&boot_img, &f, p16.0 * S)?;
        copy_sparse(&root_img, &f, p1.0 * S)?;
        f.sync_all()?;
    }
    let out = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-m", "1", "-c", "-f", "raw", "-O", "qcow2"])
        .args(["-o", "compression_type=zlib"])
        .arg(&raw)
        .arg(&tmp))?;
    std::fs::rename(&tmp, &out)?;
    Ok(BaseFixture {
        sha256: sha256_of(&out)?,
        path: out,
        machine_id: MACHINE_ID.into(),
        instance_id: INSTANCE_ID.into(),
        dirty_paths: DIRTY.to_vec(),
    })
}

/// The stand-in k3s binary: a shell script that answers `--version` with the pinned version, runs
/// as a do-nothing service for `server`/`agent`, and answers `kubectl get --raw=/readyz` with the
/// state of that service — enough for a node's first boot (the QEMU e2e) to go through the same
/// install and readiness steps as with the real binary. Never run at build time.
fn k3s_stand_in(version: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # kiln stand-in for the k3s binary.\n\
         case \"$1\" in\n\
         \x20 server|agent) exec sleep infinity ;;\n\
         \x20 kubectl) exec systemctl is-active --quiet k3s.service ;;\n\
         \x20 *) echo \"k3s version {version} (stand-in)\"; echo \"go version go1.24.11\" ;;\n\
         esac\n"
    )
}

/// The stand-in for get.k3s.io's `install.sh`: records how it was called (arguments and the
/// `INSTALL_K3S_*`/`K3S_*` environment, never a token), then, like the real script, writes and
/// starts `k3s.service` (server) or `k3s-agent.service` (agent) running the installed binary.
pub const INSTALL_STAND_IN: &str = r#"#!/bin/sh
# kiln stand-in for get.k3s.io's install.sh: records how it was called, then sets up the service.
set -e
log=${KILN_INSTALL_LOG:-/var/log/kiln-k3s-install.log}
{
  echo "args: $*"
  env | grep -E '^(INSTALL_K3S_|K3S_)' | grep -v '^K3S_TOKEN=' | sort
} >> "$log"
case "${INSTALL_K3S_EXEC:-server}" in
  agent*) unit=k3s-agent; cmd=agent ;;
  *) unit=k3s; cmd=server ;;
esac
[ "${INSTALL_K3S_SKIP_START:-false}" = true ] && exit 0
cat > "/etc/systemd/system/$unit.service" <<UNIT
[Unit]
Description=k3s stand-in ($cmd)
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/local/bin/k3s $cmd
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now "$unit.service"
echo "service: $unit.service started" >> "$log"
"#;

/// Stand-in k3s release assets.
#[derive(Debug, Clone)]
pub struct K3sAssets {
    pub dir: PathBuf,
    pub version: String,
    /// sha256 of `install.sh` (the release's sums file does not list it; recipes pin it).
    pub install_sh_sha256: String,
    /// name → sha256 as listed in `sha256sum-ARCH.txt`.
    pub sums: Vec<(String, String)>,
}

/// Write `k3s` (or `k3s-arm64`), `k3s-airgap-images-ARCH.tar.zst` (a tar of a manifest and
/// `images_size` bytes of layer-like data, zstd-compressed), `install.sh` and
/// `sha256sum-ARCH.txt` into `dir`.
pub fn make_k3s_assets(
    dir: &Path,
    version: &str,
    arch: &str,
    images_size: usize,
) -> io::Result<K3sAssets> {
    std::fs::create_dir_all(dir)?;
    let bin_name = if arch == "amd64" {
        "k3s".to_owned()
    } else {
        format!("k3s-{arch}")
    };
    put(dir, &bin_name, k3s_stand_in(version).as_bytes(), 0o755)?;
    put(dir, "install.sh", INSTALL_STAND_IN.as_bytes(), 0o755)?;

    let tar_src = dir.join(".airgap-src");
    let _ = std::fs::remove_dir_all(&tar_src);
    put(&tar_src, "/manifest.json", br#"[{"Config":"config.json","RepoTags":["docker.io/rancher/mirrored-pause:3.6"],"Layers":["layer.tar"]}]"#, 0o644)?;
    put(
        &tar_src,
        "/config.json",
        b"{\"architecture\":\"amd64\",\"os\":\"linux\"}",
        0o644,
    )?;
    put(&tar_src, "/layer.tar", &noise(images_size, 31), 0o644)?;
    let tar = run_bytes(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@1735689600",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--format=gnu",
                "-cf",
                "-",
                "-C",
            ])
            .arg(&tar_src)
            .args(["manifest.json", "config.json", "layer.tar"]),
    )?;
    let _ = std::fs::remove_dir_all(&tar_src);
    let images_name = format!("k3s-airgap-images-{arch}.tar.zst");
    let zst = zstd::bulk::compress(&tar, 3)?;
    put(dir, &images_name, &zst, 0o644)?;

    let mut sums = Vec::new();
    for n in [&bin_name, &images_name] {
        sums.push((n.clone(), sha256_of(&dir.join(n))?));
    }
    let text: String = sums.iter().map(|(n, s)| format!("{s}  {n}\n")).collect();
    let mut f = std::fs::File::create(dir.join(format!("sha256sum-{arch}.txt")))?;
    f.write_all(text.as_bytes())?;
    Ok(K3sAssets {
        dir: dir.to_owned(),
        version: version.to_owned(),
        install_sh_sha256: sha256_of(&dir.join("install.sh"))?,
        sums,
    })
}

fn run_bytes(cmd: &mut Command) -> io::Result<Vec<u8>> {
    let out = cmd
        .output()
        .map_err(|e| io::Error::other(format!("cannot run {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

/// A recipe for a generated base and assets (paths absolute).
pub fn recipe_yaml(name: &str, base: &BaseFixture, assets: &K3sAssets, extra: &str) -> String {
    format!(
        "name: {name}\nbase:\n  path: {}\n  sha256: {}\narch: amd64\noutput:\n  kind: qcow2\n  compression: zstd\nsource_date_epoch: 1767225600\nmachine_id: uninitialized\nk3s:\n  version: {}\n  assets: {}\n  install_sh_sha256: {}\n{extra}",
        base.path.display(),
        base.sha256,
        assets.version,
        assets.dir.display(),
        assets.install_sh_sha256
    )
}
