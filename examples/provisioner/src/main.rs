//! A provisioner using kiln as a library: a golden image from a recipe made in code, two builds on
//! two threads, a third build cancelled from another thread, and a 1-server/2-agent cluster from a
//! spec made in code with the token handed over in code. `provisioner FIXTURES OUT`: FIXTURES holds
//! `ubuntu-24.04-base.qcow2` and `k3s/` (what `cargo xtask fixtures` generates).

use std::path::Path;
use std::sync::Arc;

use kiln_cluster::{Cluster, ClusterSpec, Network, NodeSpec, Subnet, Token};
use kiln_golden::{Arch, Base, BuildOptions, Cancel, ErrorKind, K3s, ModulesLoad, Recipe};
use kiln_golden::{DirEntry, Step, StepEvent, Sysctl};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What `recipes/k3s-node-ubuntu-24.04.yaml` says in YAML, made in code (pins included).
fn recipe(name: &str, fixtures: &Path) -> Recipe {
    let base_sha256 = "c28c27067a1fde2d7192db05b922efa700a2919e8bd71a7c989866d8615ae4f1";
    let install_sh_sha256 = "8dd65dcacc0aecc9b30c668b782a062815898abb4754a7e6d74c978c219a583c";
    let base = Base::new(fixtures.join("ubuntu-24.04-base.qcow2"), base_sha256);
    let k3s =
        K3s::new("v1.34.3+k3s1", fixtures.join("k3s")).with_install_sh_sha256(install_sh_sha256);
    Recipe::new(name, base, Arch::Amd64, 1_767_225_600)
        .with_k3s(k3s)
        .with_prerequisite(ModulesLoad::new("k3s", ["overlay", "br_netfilter"]))
        .with_prerequisite(Sysctl::new("90-k3s", [("net.ipv4.ip_forward", "1")]))
        .with_prerequisite(DirEntry::new("/etc/rancher/k3s"))
}

/// A 1-server/2-agent cluster on 10.0.0.0/24, NICs matched by MAC.
fn spec() -> Result<ClusterSpec> {
    let net = Network::new(Subnet::new("10.0.0.0/24".parse()?, "10.0.0.1".parse()?))
        .with_interface("ens3")
        .with_dns("10.0.0.1".parse()?);
    let cluster = Cluster::new("lab", "v1.34.3+k3s1", net).with_user("ubuntu");
    Ok(ClusterSpec::new(
        cluster,
        vec![
            NodeSpec::server("cp-01", "10.0.0.10".parse()?).with_mac("52:54:00:00:00:10".parse()?),
            NodeSpec::agent("w-01", "10.0.0.11".parse()?).with_mac("52:54:00:00:00:11".parse()?),
            NodeSpec::agent("w-02", "10.0.0.12".parse()?).with_mac("52:54:00:00:00:12".parse()?),
        ],
    ))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [fixtures, out] = args.as_slice() else {
        return Err("usage: provisioner FIXTURES OUT".into());
    };
    let (fixtures, out) = (Path::new(fixtures), Path::new(out));

    // Two builds at once, each on its own thread (recipes and options are Send).
    let (a, opts_a) = (recipe("node-a", fixtures), BuildOptions::new(out.join("a")));
    let (b, opts_b) = (recipe("node-b", fixtures), BuildOptions::new(out.join("b")));
    let ta = std::thread::spawn(move || kiln_golden::build(&a, &opts_a));
    let tb = std::thread::spawn(move || kiln_golden::build(&b, &opts_b));
    let golden = ta.join().map_err(|_| "thread a panicked")??;
    let other = tb.join().map_err(|_| "thread b panicked")??;
    assert_eq!(golden.manifest.output.sha256, other.manifest.output.sha256);
    println!(
        "golden {} sha256 {}",
        golden.image.display(),
        golden.manifest.output.sha256
    );

    // A third build, cancelled from another thread once the k3s step reports its first bytes.
    let cancel = Cancel::new();
    let trip = cancel.clone();
    let opts = BuildOptions::new(out.join("c"))
        .with_cancel(cancel)
        .with_progress(Arc::new(move |e| {
            if let StepEvent::Bytes {
                step: Step::K3s, ..
            } = e
            {
                let trip = trip.clone();
                std::thread::spawn(move || trip.cancel()).join().ok();
            }
        }));
    let err = kiln_golden::build(&recipe("node-c", fixtures), &opts).expect_err("cancelled");
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(
        !out.join("c").exists(),
        "a cancelled build leaves nothing behind"
    );
    println!("third build: {err}, nothing left behind");

    // The cluster, with the token from the provisioner's own secret store (no token file).
    let token = Token::new("example-token-from-a-secret-store");
    let opts = kiln_cluster::Options::default();
    let report = kiln_cluster::build(&spec()?, &token, &golden.image, &out.join("cluster"), &opts)?;
    for n in &report.inventory.nodes {
        println!(
            "{} {} {} {} {}",
            n.info.name,
            n.info.role.as_str(),
            n.info.ipv4,
            n.disk.path,
            n.seed.path
        );
    }
    Ok(())
}
